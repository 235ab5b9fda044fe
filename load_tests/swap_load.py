"""Swap load test: steady chat load (streamed and not) while the registry publishes 5 new adapter versions and
one rollback, the way the sleep worker will (files into the registry, then the Redis pointer + pub/sub).

Reports failed requests (goal 0), latency p50/p99 before, during and after the swaps, and for each publish
the delay until the first response served by the new version (goal <= 2 s on the default model here).

    .venv/bin/python -m load_tests.swap_load --concurrency 6 --phase-s 20 --swap-every-s 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
import redis.asyncio as aioredis
from openai import AsyncOpenAI

from load_tests.serving_bench import pct, wait_ready
from sleepd.active_adapter import ActiveAdapter
from sleepd.models import resolve_model
from sleepd.registry import AdapterRegistry, base_model_fingerprint
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
    error: str = ""


async def load(base_url: str, stop: asyncio.Event, phase: dict[str, str], out: list[Sample], workers: int) -> None:
    async with AsyncOpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0, timeout=120) as client:

        async def worker(w: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                start = time.perf_counter()
                current = phase["name"]
                try:
                    raw = await client.chat.completions.with_raw_response.create(
                        model="sleepd",
                        messages=[{"role": "user", "content": f"Give me a short tip about gardening ({w}.{i})."}],
                        max_tokens=32,
                        stream=i % 2 == 0,
                    )
                    parsed = raw.parse()
                    if i % 2 == 0:
                        async for _ in parsed:  # type: ignore[union-attr]
                            pass
                    out.append(Sample(current, start, time.perf_counter(), True, raw.headers["x-sleepd-adapter"]))
                except Exception as exc:  # counted, not raised: the point is to count failures
                    now = time.perf_counter()
                    out.append(Sample(current, start, now, False, "", repr(exc)[:200]))

        await asyncio.gather(*(worker(w) for w in range(workers)))


def start_server(
    model: str, registry: AdapterRegistry, args: argparse.Namespace, workdir: Path
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {
        **os.environ, "SLEEPD_MODEL": model, "SLEEPD_PORT": str(port), "SLEEPD_REDIS_URL": args.redis_url,
        "SLEEPD_DATA_DIR": str(workdir / "data"), "SLEEPD_REGISTRY_DIR": str(registry.root),
    }  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "sleepd.cli", "serve"], env=env, cwd=ROOT,
        stdout=open(workdir / "server.log", "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, proc, "/ready")
    return base_url, proc


async def drive(
    base_url: str, model: str, registry: AdapterRegistry, adapters: list[Path], args: argparse.Namespace
) -> dict[str, object]:
    r = aioredis.from_url(args.redis_url)
    pointer = ActiveAdapter(r)
    samples: list[Sample] = []
    phase = {"name": "before"}
    stop = asyncio.Event()
    load_task = asyncio.create_task(load(base_url, stop, phase, samples, args.concurrency))
    await asyncio.sleep(args.phase_s)

    phase["name"] = "during"
    swaps: list[dict[str, object]] = []
    fingerprint = base_model_fingerprint(model)
    versions: list[str] = []
    plan: list[tuple[str, Path | None]] = [("publish", a) for a in adapters] + [("rollback", None)]
    for kind, src in plan:
        if src is not None:
            meta = await asyncio.to_thread(registry.publish, src, base_model=fingerprint, source="external")
            version = meta.version
            versions.append(version)
        else:
            version = versions[-2]  # back to the previous version
        t_pub = time.perf_counter()
        await pointer.set(version, expected=None, reason=f"load test {kind}")
        active_s = await until_active(base_url, version, t_pub, timeout_s=30)
        first = await probe(base_url, version, t_pub)
        swaps.append(
            {"kind": kind, "version": version, "publish_to_active_s": active_s, "publish_to_first_served_s": first}
        )
        await asyncio.sleep(args.swap_every_s)

    phase["name"] = "after"
    await asyncio.sleep(args.phase_s)
    stop.set()
    await load_task
    await r.aclose()

    def lat(name: str) -> dict[str, float]:
        vals = [(s.end - s.start) * 1000 for s in samples if s.phase == name and s.ok]
        return {"n": len(vals), "p50_ms": pct(vals, 0.5), "p99_ms": pct(vals, 0.99)}

    served = [v for s in swaps if isinstance(v := s["publish_to_first_served_s"], (int, float))]
    return {
        "requests": len(samples),
        "failed": sum(not s.ok for s in samples),
        "errors": sorted({s.error for s in samples if not s.ok})[:5],
        "latency": {p: lat(p) for p in ("before", "during", "after")},
        "swaps": swaps,
        "publish_to_first_served_max_s": max(served) if len(served) == len(swaps) else None,
    }


async def until_active(base_url: str, version: str, t_pub: float, timeout_s: float) -> float | None:
    """Seconds from the pointer change until the server reports serving `version` (load + warm-up + switch)."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            card = (await http.get("/v1/models")).json()["data"][0]
            if card["sleepd_adapter"] == version:
                return time.perf_counter() - t_pub
            await asyncio.sleep(0.01)
    return None


async def probe(base_url: str, version: str, t_pub: float) -> float | None:
    """A fresh request right after the switch (beside the steady load): seconds from the pointer change until
    its first token arrives, and only if the new version served it."""
    async with AsyncOpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0, timeout=120) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="sleepd", messages=[{"role": "user", "content": "Say hello."}], max_tokens=1
        )
    return time.perf_counter() - t_pub if raw.headers["x-sleepd-adapter"] == version else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--phase-s", type=float, default=20)
    ap.add_argument("--swap-every-s", type=float, default=5)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = ap.parse_args()

    workdir = ROOT / "bench" / "results" / f"swap-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir(parents=True)
    model = resolve_model(args.model, ROOT / "data" / "models")
    registry = AdapterRegistry(workdir / "registry")
    # Small random deltas: outputs change per version but stay fluent enough for a realistic load.
    adapters = [build_random_lora(Path(model), workdir / f"src-{i}", rank=8, seed=i, scale=0.02) for i in range(1, 6)]
    redis.Redis.from_url(args.redis_url).flushdb()
    base_url, proc = start_server(model, registry, args, workdir)
    try:
        result = asyncio.run(drive(base_url, model, registry, adapters, args))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    (workdir / "summary.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
