"""Hot swap under real vLLM, on two `sleepd serve` processes sharing one registry and one Redis:

- `a` serves the active version from merged weights (SLEEPD_ADAPTER_SERVING=merged): a new version is served
  at once through a LoRA on the engine's current weights, then merged in the background;
- `b` serves through vLLM's LoRA path only (4 LoRA slots, all usable with the grouped CPU LoRA ops).

Checked: in-flight streams finish complete and token-exact on the version they started with; merged and LoRA
serving give the same tokens; a request without `model` returns its lease; a stalled stream is ended at the
drain deadline and its version unloaded; a version not yet visible is retried and reported as skew; corrupt,
incompatible or foreign-base adapters are refused while the current one keeps serving; two servers converge.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from openai import OpenAI

from sleepd import keys
from sleepd.registry import AdapterRegistry
from sleepd.testing import build_random_lora, build_tiny_llama
from tests.conftest import CACHE, RedisServer, Server, start_server

PROMPT = [{"role": "user", "content": "Describe a quiet harbour at dawn."}]
N = 300  # tokens: long enough that a swap lands while a stream is still generating
B_DRAIN_TIMEOUT_S = 20  # server b's drain deadline: above its longest test stream, short for a test


@dataclass
class Cluster:
    a: Server
    b: Server
    registry: AdapterRegistry
    redis_url: str
    adapters_src: dict[str, Path]


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("swap")
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(redis_url).flushdb()
    registry = AdapterRegistry(root / "registry")
    src = {name: build_random_lora(tiny_model, CACHE / "adapters" / f"tiny-{name}", seed=seed)
           for name, seed in (("one", 1), ("two", 2), ("three", 3))}  # fmt: skip
    common = {"SLEEPD_REGISTRY_DIR": str(registry.root), "SLEEPD_ADAPTER_RECONCILE_INTERVAL_S": "0.5"}
    a = start_server(
        str(tiny_model), redis_url, root / "a", SLEEPD_ADAPTER_SERVING="merged", SLEEPD_ADAPTER_MERGE_DELAY_S="3",
        SLEEPD_ADAPTER_DRAIN_TIMEOUT_S="120", **common,
    )  # fmt: skip
    b = start_server(
        str(tiny_model), redis_url, root / "b", SLEEPD_ADAPTER_SERVING="lora",
        SLEEPD_ADAPTER_DRAIN_TIMEOUT_S=str(B_DRAIN_TIMEOUT_S), **common,
    )  # fmt: skip
    yield Cluster(a, b, registry, redis_url, src)
    a.stop()
    b.stop()


def admin(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, server.base_url + path, headers=server.admin_headers(), timeout=120, **kw)


def activate(server: Server, version: str) -> httpx.Response:
    return admin(server, "POST", f"/admin/adapters/{version}/activate")


def greedy(server: Server, max_tokens: int = 24) -> tuple[str, str]:
    with OpenAI(base_url=server.api, api_key="x", max_retries=0, timeout=120) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="sleepd", messages=PROMPT, max_tokens=max_tokens, temperature=0,  # type: ignore[arg-type]
            extra_body={"ignore_eos": True},
        )  # fmt: skip
    return raw.parse().choices[0].message.content or "", raw.headers["x-sleepd-adapter"]


def publish(cluster: Cluster, name: str) -> str:
    r = admin(cluster.a, "POST", "/admin/adapters", json={"path": str(cluster.adapters_src[name])})
    assert r.status_code == 200, r.text
    return str(r.json()["version"])


def state(server: Server) -> dict[str, Any]:
    r = admin(server, "GET", "/admin/adapters")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_serving(server: Server, version: str, timeout_s: float = 20) -> None:
    wait_until(lambda: state(server)["serving"] == version, f"{server.base_url} to serve {version}", timeout_s)


def wait_merged(server: Server, version: str, timeout_s: float = 30) -> None:
    """Until `server` serves `version` from merged weights (its engine's weights are that version's)."""

    def merged() -> bool:
        s = state(server)
        return bool(s["serving"] == version and s["weights"] == version)

    wait_until(merged, f"{server.base_url} to serve {version} merged", timeout_s)


@dataclass
class Streamed:
    text: str
    adapter: str
    finish_reason: str | None
    completion_tokens: int

    def complete(self, n: int) -> bool:
        """Not cut: ended normally after all `n` tokens (an error event would have raised in the client)."""
        return self.finish_reason == "length" and self.completion_tokens == n


def stream_while(server: Server, during: Callable[[], object], max_tokens: int = N) -> Streamed:
    """Stream greedily; after the first token, run `during` (blocking) in a thread while tokens flow.
    Fails unless `during` finished while the stream was still delivering tokens."""
    from openai import AsyncOpenAI

    async def go() -> Streamed:
        async with AsyncOpenAI(base_url=server.api, api_key="x", max_retries=0, timeout=120) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="sleepd", messages=PROMPT, max_tokens=max_tokens, temperature=0, stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
            )  # fmt: skip
            parts: list[str] = []
            finish, tokens = None, 0
            side: asyncio.Task[object] | None = None
            tokens_after_side = 0
            async for chunk in raw.parse():
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
                if not chunk.choices:
                    continue
                finish = chunk.choices[0].finish_reason or finish
                if chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                    tokens_after_side += bool(side and side.done())
                    if side is None:
                        side = asyncio.create_task(asyncio.to_thread(during))
            assert side is not None
            await side
        assert tokens_after_side > 0, "the side action did not finish while the stream was in flight"
        return Streamed("".join(parts), raw.headers["x-sleepd-adapter"], finish, tokens)

    return asyncio.run(go())


def metrics_text(server: Server) -> str:
    return httpx.get(server.base_url + "/metrics").text


def metric(server: Server, name: str) -> float:
    """A metric's value; fails if the server does not export it (a missing metric must not read as 0)."""
    for line in httpx.get(server.base_url + "/metrics").text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{server.base_url} exports no {name}")


def test_swaps_keep_in_flight_requests_on_their_version(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    base_alone, header = greedy(a, N)
    assert header == "base"
    v1 = publish(cluster, "one")
    v2 = publish(cluster, "two")

    # base -> v1 while a base stream is in flight; v1 requests run beside it (a batch mixing base and LoRA rows).
    def activate_v1_and_load() -> None:
        assert activate(a, v1).status_code == 200
        for _ in range(3):
            assert greedy(a, 8)[1] == v1

    streamed = stream_while(a, activate_v1_and_load)
    assert streamed.adapter == "base" and streamed.complete(N)
    assert streamed.text == base_alone, "the in-flight base stream changed when v1 was activated"

    wait_merged(a, v1)
    v1_alone, header = greedy(a, N)
    assert header == v1 and v1_alone != base_alone

    # v1 -> v2 mid-stream: the v1 stream (merged weights) finishes with exactly v1's tokens, all of them.
    streamed = stream_while(a, lambda: activate(a, v2).raise_for_status())
    assert streamed.adapter == v1 and streamed.complete(N) and streamed.text == v1_alone
    v2_alone, header = greedy(a, N)
    assert header == v2 and v2_alone not in (v1_alone, base_alone)

    # One rollback call brings v1 back; after the merge, nothing is left loaded on the LoRA path.
    assert activate(a, v1).status_code == 200
    assert greedy(a, N) == (v1_alone, v1)
    wait_merged(a, v1)
    assert greedy(a, N) == (v1_alone, v1)
    wait_until(lambda: metric(a, "sleepd_adapters_loaded") == 0, "drained LoRAs to be unloaded")

    # The other server followed every change (pub/sub + the pointer) and, on the LoRA path, gives the same tokens.
    wait_serving(b, v1)
    assert greedy(b, N) == (v1_alone, v1)
    listed = state(a)
    assert listed["active"] == v1 and [m["version"] for m in listed["data"]] == [v1, v2]
    assert listed["data"][0]["source"] == "external" and listed["data"][0]["rank"] == 8
    assert [h["version"] for h in listed["history"][:3]] == [v1, v2, v1]


def test_engine_side_names_carry_the_content_hash(cluster: Cluster) -> None:
    b = cluster.b
    wait_serving(b, state(cluster.a)["active"])
    version = state(b)["serving"]
    loaded = state(b)["loaded"]
    digest = cluster.registry.get(version).content_hash
    assert [entry["version"] for entry in loaded] == [version]
    assert digest[:12] in loaded[0]["name"] and version in loaded[0]["name"]


def test_merged_serving_gives_the_lora_paths_tokens_and_survives_a_stream_in_flight(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    v3 = publish(cluster, "three")
    merges = metric(a, 'sleepd_adapter_merges_total{outcome="ok"}')
    assert activate(a, v3).status_code == 200
    # Started right after the switch, before the merge: the merge waits for it (no cut, no change of weights).
    streamed = stream_while(a, lambda: None)
    wait_serving(b, v3)
    on_lora, header = greedy(b, N)
    assert header == v3 and streamed.adapter == v3 and streamed.complete(N) and streamed.text == on_lora
    wait_merged(a, v3)
    assert greedy(a, N) == (on_lora, v3), "merged weights must give the LoRA path's tokens"
    assert metric(a, 'sleepd_adapter_merges_total{outcome="ok"}') > merges


def test_requests_without_model_return_their_lease(cluster: Cluster) -> None:
    a = cluster.a
    statuses, swaps = [], []
    for name in ("one", "two", "three", "one"):
        version = publish(cluster, name)
        swaps.append(activate(a, version).status_code)
        for _ in range(2):  # "model" is optional in the OpenAI API
            r = httpx.post(a.api + "/chat/completions", json={"messages": PROMPT, "max_tokens": 4}, timeout=60)
            statuses.append((r.status_code, r.headers.get("x-sleepd-adapter") == version))
    assert swaps == [200] * 4, f"swaps refused: leases taken by requests without 'model' were never returned: {swaps}"
    assert statuses == [(200, True)] * 8
    wait_until(lambda: metric(a, "sleepd_adapter_leases") == 0, "every lease to be returned")


def stalled_stream(server: Server, max_tokens: int) -> socket.socket:
    """Open a chat stream and never read it. Its events (6 choices, 20 logprobs each: ~10 KB a token) outgrow
    the socket buffers (4 MB at most on Linux) well before it ends, so the server's writes block."""
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    import json

    body = json.dumps({
        "model": "sleepd", "messages": PROMPT, "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
        "logprobs": True, "top_logprobs": 20, "n": 6,
    }).encode()  # fmt: skip
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    sock.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def test_stalled_streams_are_ended_at_the_drain_deadline_and_their_versions_unloaded(cluster: Cluster) -> None:
    b = cluster.b  # 4 LoRA slots: four pinned versions block every swap until the deadline frees them
    pinned = [publish(cluster, name) for name in ("one", "two", "three", "one")]
    v_next = publish(cluster, "two")
    socks = []
    try:
        for version in pinned:
            assert activate(b, version).status_code == 200
            socks.append(stalled_stream(b, max_tokens=900))
            time.sleep(1)  # it holds its ticket; its writes fill the socket buffers
        started = time.monotonic()
        wait_until(lambda: activate(b, v_next).status_code == 200, "the swap to succeed", B_DRAIN_TIMEOUT_S + 20)
        assert time.monotonic() - started >= B_DRAIN_TIMEOUT_S - 5, "the stalled streams never pinned their versions"
        assert metric(b, "sleepd_adapter_drain_revoked_total") >= 1  # the first deadline freed a slot
        wait_until(lambda: metric(b, "sleepd_adapter_drain_revoked_total") >= 2, "the second deadline")
        # v_next, and the last pinned version until its own deadline
        wait_until(lambda: metric(b, "sleepd_adapters_loaded") <= 2, "the revoked versions to be unloaded")
        assert "drain deadline" in b.log_path.read_text()
        for sock in socks[:2]:  # the server ended these streams: the connection closes once what was sent is read
            sock.settimeout(10)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            assert b'"finish_reason":"length"' not in received, "a stalled stream was not cut"
    finally:
        for sock in socks:
            sock.close()
    assert greedy(b, 8)[1] == v_next


def test_a_version_not_yet_visible_is_retried_and_reported_as_skew(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    before = state(a)["serving"]
    version = publish(cluster, "two")
    folder = cluster.registry.path(version)
    hidden = folder.with_name(f".not-yet-{version}")
    os.rename(folder, hidden)  # published elsewhere; this host's view of the shared folder lags
    client = redis.Redis.from_url(cluster.redis_url)
    client.set(keys.ADAPTER_ACTIVE, version)
    client.publish(keys.ADAPTER_EVENTS, "{}")
    time.sleep(2)
    assert state(a)["serving"] == before
    while_hidden = state(a).get("retrying", {}), metrics_text(a)
    os.rename(hidden, folder)  # now visible: the servers pick it up without the pointer moving
    wait_serving(a, version)
    wait_serving(b, version)
    client.close()
    # Meanwhile it was reported: a retry pending, and skew (serving differs from the pointer) on the dashboard.
    assert version in while_hidden[0] and "\nsleepd_adapter_skew 1.0" in while_hidden[1]
    assert metric(a, "sleepd_adapter_skew") == 0


def test_corrupt_adapter_is_refused_and_current_keeps_serving(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    before, current = greedy(a)
    wait_serving(b, current)
    v = publish(cluster, "three")
    weights = cluster.registry.path(v) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)  # bit rot after publishing

    r = activate(a, v)
    assert r.status_code == 400 and "hash" in r.json()["error"]["message"]
    assert greedy(a) == (before, current)

    # A writer that skips the admin API (points Redis at the bad version): every server refuses, keeps serving.
    client = redis.Redis.from_url(cluster.redis_url)
    client.set(keys.ADAPTER_ACTIVE, v)
    client.publish(keys.ADAPTER_EVENTS, "{}")
    time.sleep(1.5)
    assert greedy(a) == (before, current) and greedy(b)[1] == current
    assert metric(b, 'sleepd_adapter_rejections_total{reason="invalid"}') >= 1
    client.set(keys.ADAPTER_ACTIVE, current)
    client.close()


def test_an_adapter_made_for_another_base_model_is_refused(cluster: Cluster) -> None:
    a = cluster.a
    before, current = greedy(a)
    # Same shapes (it would load), but its metadata says it was trained on another base model.
    meta = cluster.registry.publish(cluster.adapters_src["one"], base_model="0123456789abcdef", source="external")
    r = activate(a, meta.version)
    assert r.status_code == 400 and "base model" in r.json()["error"]["message"]
    assert greedy(a) == (before, current)


def test_incompatible_or_broken_external_adapters_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    a = cluster.a
    count = len(cluster.registry.versions())
    # Made for a different base (hidden size 256): vLLM refuses the shapes.
    other = build_tiny_llama(CACHE / "models" / "tiny-llama-256", hidden=256)
    wrong = build_random_lora(other, tmp_path / "wrong-base", seed=4)
    r = admin(a, "POST", "/admin/adapters", json={"path": str(wrong)})
    assert r.status_code == 400, r.text
    # Not an adapter at all.
    (tmp_path / "empty").mkdir()
    r = admin(a, "POST", "/admin/adapters", json={"path": str(tmp_path / "empty")})
    assert r.status_code == 400 and "missing" in r.json()["error"]["message"]
    # Rank over the engine's cap.
    big = shutil.copytree(cluster.adapters_src["one"], tmp_path / "big")
    cfg = (big / "adapter_config.json").read_text().replace('"r": 8', '"r": 128')
    (big / "adapter_config.json").write_text(cfg)
    r = admin(a, "POST", "/admin/adapters", json={"path": str(big)})
    assert r.status_code == 400 and "rank" in r.json()["error"]["message"]
    assert len(cluster.registry.versions()) == count, "a refused adapter must not be registered"
    assert activate(a, "v9999").status_code == 404


def test_base_rows_stay_exact_when_a_swap_fills_the_last_lora_slot(cluster: Cluster) -> None:
    """vLLM's own CPU LoRA ops give a batch's no-adapter rows the delta of the adapter in the *last* LoRA slot
    (index -1). On `b` (4 slots, LoRA path) a base stream runs while three versions hold slots 0-2 (each pinned
    by a stream of its own) and a fourth is activated into the last slot and served beside it: the base
    stream's tokens must not change (with vLLM's ops and all slots in use, they do)."""
    b = cluster.b
    assert activate(b, "base").status_code == 200
    wait_serving(b, "base")
    base_alone, _ = greedy(b, N)
    pinned = [publish(cluster, name) for name in ("one", "two", "three")]
    fourth = publish(cluster, "one")

    def fill_slots() -> None:
        body = {"model": "sleepd", "messages": PROMPT, "max_tokens": 900, "stream": True, "ignore_eos": True}
        with contextlib.ExitStack() as streams:
            readers = []  # kept: a dropped line iterator closes its response, and the request with it
            for version in pinned:
                assert activate(b, version).status_code == 200
                stream = streams.enter_context(httpx.stream("POST", b.api + "/chat/completions", json=body))
                assert stream.headers["x-sleepd-adapter"] == version
                readers.append(stream.iter_lines())
                next(readers[-1])  # in flight: it keeps its slot
            assert state(b)["in_flight"] >= 4  # the base stream and the three pinned ones
            assert activate(b, fourth).status_code == 200
            assert len(state(b)["loaded"]) == 4, "every slot holds a version, the last one included"
            threads = [threading.Thread(target=greedy, args=(b, 16)) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    streamed = stream_while(b, fill_slots)
    assert streamed.adapter == "base" and streamed.complete(N)
    assert streamed.text == base_alone, "the base rows of a mixed batch got an adapter's delta"
