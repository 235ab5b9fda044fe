"""Swap load test, one server, one run, three measurements side by side:

1. **Throughput, base vs active adapter** on the same server and load: rounds alternate base / adapter (a rank-16
   LoRA on all seven projections, as a sleep makes), each switched through the pointer like an operator would,
   and measured once the server serves it (merged, unless `--serving lora`). Reported per round and as the
   ratio of medians (goal >= 0.9).
2. **Publish -> first token on the new version** under steady chat load over `--swaps` pointer moves (new
   versions written into the registry then the pointer compare-and-set, as the sleep worker does, and
   rollbacks to the previous version), p50/p99 (goal <= 2 s p99), split into the swap itself (publish -> the
   server reports the version) and the probe's own time to first token, beside a control probe sent on the old
   version just before each move (what a first token costs under this load with no swap). Every
   `--merge-every`-th swap also waits for the merge, so merges (and the wait they impose on new requests) happen
   under load too.
3. **Failed or cut requests** during all of it (goal 0): errors, and streams that ended without a finish reason
   or with fewer tokens than asked (`ignore_eos`, so every stream must deliver all of them).

    .venv/bin/python -m load_tests.swap_load --rounds 3 --swaps 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis
from openai import AsyncOpenAI

from load_tests.serving_bench import pct, read_stream, wait_ready
from sleepd.active_adapter import ActiveAdapter
from sleepd.models import resolve_model
from sleepd.registry import BASE, AdapterRegistry, base_model_fingerprint
from sleepd.testing import build_random_lora
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Sample:
    phase: str
    start: float
    end: float
    ok: bool
    adapter: str
    tokens: int = 0
    ttft: float | None = None
    error: str = ""


@dataclass
class Load:
    """Closed-loop chat clients; every request asks for exactly `max_tokens` tokens (ignore_eos)."""

    base_url: str
    workers: int
    max_tokens: int
    phase: str = "warmup"
    samples: list[Sample] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, requests: int | None = None) -> None:
        """Until stopped, or until `requests` requests are done."""
        left = [requests]
        async with AsyncOpenAI(base_url=self.base_url + "/v1", api_key="x", max_retries=0, timeout=300) as client:

            async def worker(w: int) -> None:
                i = 0
                while not self.stop.is_set() and (left[0] is None or left[0] > 0):
                    if left[0] is not None:
                        left[0] -= 1
                    i += 1
                    self.samples.append(await self._one(client, f"{w}.{i}", stream=i % 2 == 0))

            await asyncio.gather(*(worker(w) for w in range(self.workers)))

    async def _one(self, client: AsyncOpenAI, tag: str, stream: bool) -> Sample:
        phase, start = self.phase, time.perf_counter()
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="sleepd", messages=[{"role": "user", "content": f"Give me a short tip about gardening ({tag})."}],
                max_tokens=self.max_tokens, stream=stream, extra_body={"ignore_eos": True},
                stream_options={"include_usage": True} if stream else None,
            )  # fmt: skip
            adapter = raw.headers["x-sleepd-adapter"]
            parsed: Any = raw.parse()
            ttft, tokens, finish = None, 0, None
            if stream:
                ttft, tokens, finish = await read_stream(parsed, start)
            else:
                finish, tokens = parsed.choices[0].finish_reason, parsed.usage.completion_tokens
            end, complete = time.perf_counter(), finish == "length" and tokens == self.max_tokens
            cut = "" if complete else f"cut: finish {finish}, {tokens} tokens"
            return Sample(phase, start, end, complete, adapter, tokens, ttft, cut)
        except Exception as exc:  # counted, not raised: the point is to count failures
            return Sample(phase, start, time.perf_counter(), False, "", 0, None, repr(exc)[:200])


def start_server(model: str, registry: AdapterRegistry, args: argparse.Namespace, workdir: Path) -> tuple[str, Any]:
    port = free_port()
    env = {
        **os.environ, "SLEEPD_MODEL": model, "SLEEPD_PORT": str(port), "SLEEPD_REDIS_URL": args.redis_url,
        "SLEEPD_DATA_DIR": str(workdir / "data"), "SLEEPD_REGISTRY_DIR": str(registry.root),
        "SLEEPD_MAX_MODEL_LEN": "2048", "SLEEPD_KV_CACHE_GIB": "2", "SLEEPD_ADAPTER_SERVING": args.serving,
    }  # fmt: skip
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - the child writes to it for its whole life
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, proc, "/ready")
    return base_url, proc


async def serving(http: httpx.AsyncClient) -> tuple[str, bool]:
    card = (await http.get("/v1/models")).json()["data"][0]
    return card["sleepd_adapter"], bool(card.get("sleepd_merged"))


async def until_serving(http: httpx.AsyncClient, version: str, merged: bool, timeout_s: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        now, is_merged = await serving(http)
        if now == version and (is_merged or not merged):
            return time.perf_counter() - start
        await asyncio.sleep(0.01)
    raise TimeoutError(f"not serving {version} (merged={merged}) after {timeout_s} s")


async def probe(client: AsyncOpenAI) -> tuple[float, str]:
    """One short streamed chat: seconds to its first token, and the version that answered it."""
    t0 = time.perf_counter()
    raw = await client.chat.completions.with_raw_response.create(
        model="sleepd", messages=[{"role": "user", "content": "Say hello."}], max_tokens=2, stream=True
    )
    async for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            break
    return time.perf_counter() - t0, raw.headers["x-sleepd-adapter"]


async def first_token_on(client: AsyncOpenAI, version: str, t_pub: float, http: httpx.AsyncClient
                         ) -> tuple[float, float, float]:  # fmt: skip
    """Seconds from the pointer move until a fresh request's first token, served by `version` (polls until
    the server reports the version, then asks; retries if the answer still came from another version); and its
    two parts: until the server reported the version (the swap), and that request's own time to first token."""
    while True:
        await until_serving(http, version, merged=False)
        active = time.perf_counter() - t_pub
        ttft, answered = await probe(client)
        if answered == version:
            return time.perf_counter() - t_pub, active, ttft


async def throughput(load: Load, args: argparse.Namespace) -> dict[str, float]:
    load.samples, load.stop = [], asyncio.Event()
    t0 = time.perf_counter()
    await load.run(requests=args.requests)
    wall = time.perf_counter() - t0
    ok = [s for s in load.samples if s.ok]
    return {
        "tok_per_s": sum(s.tokens for s in ok) / wall,
        "e2e_p50_s": pct([s.end - s.start for s in ok], 0.5),
        "failed": len(load.samples) - len(ok),
    }


async def drive(base_url: str, model: str, registry: AdapterRegistry, args: argparse.Namespace) -> dict[str, Any]:
    r = aioredis.from_url(args.redis_url)
    pointer = ActiveAdapter(r)
    http = httpx.AsyncClient(base_url=base_url, timeout=30)
    fingerprint = base_model_fingerprint(model)
    merged = args.serving != "lora"
    srcs = [build_random_lora(Path(model), args.workdir / f"src-{i}", rank=16, seed=i, scale=0.02) for i in range(1, 6)]

    async def move(version: str, reason: str) -> float:
        current = await pointer.get()
        t_pub = time.perf_counter()
        await pointer.set(version, expected=current, reason=reason)
        return t_pub

    # 1. Throughput, base vs the adapter, alternating rounds on the same server.
    adapter = (await asyncio.to_thread(registry.publish, srcs[0], base_model=fingerprint, source="external")).version
    load = Load(base_url, args.concurrency, args.max_tokens)
    rounds: list[dict[str, Any]] = []
    await move(adapter, "warm-up")
    await until_serving(http, adapter, merged)
    await load.run(requests=args.concurrency)  # warm-up, not counted
    for rnd in range(1, args.rounds + 1):
        for version in (BASE, adapter):
            await move(version, "throughput round")
            await until_serving(http, version, merged)
            load.phase = f"throughput-{version}"
            row = {"round": rnd, "serving": version, **await throughput(load, args)}
            rounds.append(row)
            print(json.dumps(row), flush=True)
    base_tps = statistics.median(x["tok_per_s"] for x in rounds if x["serving"] == BASE)
    adapter_tps = statistics.median(x["tok_per_s"] for x in rounds if x["serving"] == adapter)

    # 2. Swaps under steady load: new versions and rollbacks.
    load.samples, load.stop, load.phase = [], asyncio.Event(), "swaps"
    load.max_tokens = args.swap_max_tokens
    load_task = asyncio.create_task(load.run())
    client = AsyncOpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    await asyncio.sleep(args.swap_every_s)
    history = [await pointer.get()]
    swaps: list[dict[str, Any]] = []
    for i in range(args.swaps):
        rollback = i % 3 == 2 and len(history) >= 2
        if rollback:
            history.pop()
            version = history[-1]
        else:
            src = srcs[(i % (len(srcs) - 1)) + 1]
            meta = await asyncio.to_thread(registry.publish, src, base_model=fingerprint, source="external")
            version = meta.version
            history.append(version)
        # Control: the same probe just before the move, on the version serving now: what a first token costs
        # under this load without a swap.
        control, _ = await probe(client)
        t_pub = await move(version, "load test rollback" if rollback else "load test publish")
        first, active, ttft = await first_token_on(client, version, t_pub, http)
        swap: dict[str, Any] = {"swap": i + 1, "kind": "rollback" if rollback else "publish", "version": version,
                               "publish_to_first_token_s": round(first, 3), "publish_to_active_s": round(active, 3),
                               "probe_ttft_s": round(ttft, 3), "control_ttft_s": round(control, 3)}  # fmt: skip
        if merged and (i + 1) % args.merge_every == 0:
            await until_serving(http, version, merged=True)
            swap["publish_to_merged_s"] = round(time.perf_counter() - t_pub, 3)
        swaps.append(swap)
        print(json.dumps(swap), flush=True)
        await asyncio.sleep(args.swap_every_s)
    load.stop.set()
    await load_task
    await client.close()
    await http.aclose()
    await r.aclose()

    firsts = [s["publish_to_first_token_s"] for s in swaps]
    to_merged = [s["publish_to_merged_s"] for s in swaps if "publish_to_merged_s" in s]
    during = load.samples
    failed = [s for s in during if not s.ok]
    return {
        "serving": args.serving,
        "throughput": {
            "rounds": rounds,
            "base_tok_per_s": round(base_tps, 1),
            "adapter_tok_per_s": round(adapter_tps, 1),
            "ratio": round(adapter_tps / base_tps, 3),
        },
        "swaps": {
            "n": len(swaps),
            "rollbacks": sum(s["kind"] == "rollback" for s in swaps),
            "merges_waited": sum("publish_to_merged_s" in s for s in swaps),
            "publish_to_first_token_p50_s": pct(firsts, 0.5),
            "publish_to_first_token_p99_s": pct(firsts, 0.99),
            "publish_to_first_token_max_s": max(firsts) if firsts else None,
            # Its parts: the swap itself (until the server reports the version), the probe's own first token,
            # and the same probe on the old version just before the move (the load's cost, no swap).
            **{
                f"{part}_{q}_s": pct([s[part + "_s"] for s in swaps], x)
                for part in ("publish_to_active", "probe_ttft", "control_ttft")
                for q, x in (("p50", 0.5), ("p99", 0.99))
            },
            "publish_to_merged_p50_s": pct(to_merged, 0.5),
            "rows": swaps,
        },
        "load_during_swaps": {
            "requests": len(during),
            "e2e_p50_s": pct([s.end - s.start for s in during if s.ok], 0.5),
            "e2e_p99_s": pct([s.end - s.start for s in during if s.ok], 0.99),
            "ttft_p99_s": pct([s.ttft for s in during if s.ok and s.ttft is not None], 0.99),
        },
        "failed_or_cut": len(failed) + sum(x["failed"] for x in rounds),
        "errors": sorted({s.error for s in failed})[:5],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--serving", choices=("auto", "merged", "lora"), default="auto")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (each: base, then the adapter)")
    ap.add_argument("--requests", type=int, default=32, help="requests per throughput measurement")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--swaps", type=int, default=50)
    ap.add_argument("--swap-every-s", type=float, default=2.0)
    ap.add_argument("--swap-max-tokens", type=int, default=32)
    ap.add_argument("--merge-every", type=int, default=10, help="every n-th swap also waits for its merge")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = ap.parse_args()

    args.workdir = ROOT / "bench" / "results" / f"swap-{time.strftime('%Y%m%d-%H%M%S')}"
    args.workdir.mkdir(parents=True)
    model = resolve_model(args.model, ROOT / "data" / "models")
    registry = AdapterRegistry(args.workdir / "registry")
    redis.Redis.from_url(args.redis_url).flushdb()
    base_url, proc = start_server(model, registry, args, args.workdir)
    try:
        result = asyncio.run(drive(base_url, model, registry, args))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    result["config"] = {k: str(v) for k, v in vars(args).items()}
    (args.workdir / "summary.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "config"} | {"swaps": {
        k: v for k, v in result["swaps"].items() if k != "rows"}}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
