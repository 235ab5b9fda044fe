"""Multi-tenant load test, one server, one run: what serving many tenants' adapters costs in throughput.

Phases, each the same closed-loop chat load (`--concurrency` clients, every request exactly `--max-tokens` tokens:
`ignore_eos`, temperature 0, half of them streamed) for `--seconds`:

1. **base**: no API key exists yet (open API, one tenant, the base model on the plain path): the reference.
2. **keyed-base**: one key, for a tenant with no adapter. Once a key exists merged serving is off and every
   request goes through the per-tenant routes (a tenant without a version runs without a LoRA, or on a zero
   adapter with `SLEEPD_CPU_LORA_OPS=vllm`), so this is the cost of keyed mode alone.
3. **tenants-1 / tenants-4 / tenants-16**: N tenants, each with its own random rank-16 adapter (all seven
   projections, as a sleep makes) published and activated through the admin API; the load goes round-robin
   over the N tenants' keys. With 16 tenants and `--max-loras` engine slots (default 4, vLLM's LoRA LRU holds as
   many), vLLM loads and evicts adapters while serving.

Per phase: completion tokens/s and its ratio to the base phase, requests that failed or were cut (goal 0), and
responses whose `x-sleepd-adapter` header is not the caller's own version (goal 0). Every `--probe-every`-th
request of a tenant asks a fixed prompt non-streamed with logprobs; its first `--probe-tokens` tokens are compared
with the same tenant's answer taken alone on an idle server (a wrong adapter, or none, changes them; fp32 batch
arithmetic may rarely flip a near-tie, which the base phase shows as a control).

4. **First token after eviction**: idle server, 16 tenants. Per repetition: tenant A is asked twice (the second
   time warm, its LoRA in the engine), then `--max-loras` other tenants are asked (A leaves vLLM's LRU), then A
   again: time to first token (streamed) warm vs after eviction, medians over `--evict-reps`.

    .venv/bin/python -m load_tests.tenants --model tiny --seconds 10
    .venv/bin/python -m load_tests.tenants --out /tmp/tenants.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from openai import AsyncOpenAI, AsyncStream

from load_tests.serving_bench import pct, read_stream, wait_ready
from sleepd.models import resolve_model
from sleepd.registry import BASE
from sleepd.testing import build_random_lora, build_tiny_llama
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PROBE = [{"role": "user", "content": "Describe a quiet harbour at dawn."}]
ZERO_TENANT = "zero"


@dataclass
class Tenant:
    name: str
    key: str | None  # None: the open API (no key exists)
    version: str  # the version every response for this tenant must name (BASE: no adapter)
    reference: list[str] | None = None  # the probe's first tokens, taken alone on an idle server
    alone_s: float | None = None  # how long that request took


@dataclass
class Sample:
    tenant: str
    start: float
    end: float
    ok: bool
    adapter: str
    expected: str
    tokens: int = 0
    ttft: float | None = None
    probe: list[str] | None = None
    error: str = ""


@dataclass
class Load:
    """Closed-loop chat clients spread round-robin over `tenants` (each request picks the next tenant)."""

    base_url: str
    tenants: list[Tenant]
    args: argparse.Namespace
    samples: list[Sample] = field(default_factory=list)
    clients: dict[str | None, AsyncOpenAI] = field(default_factory=dict)

    def client(self, key: str | None) -> AsyncOpenAI:
        if key not in self.clients:
            self.clients[key] = AsyncOpenAI(base_url=self.base_url + "/v1", api_key=key or "none", max_retries=0,
                                            timeout=600)  # fmt: skip
        return self.clients[key]

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()

    async def run(self, seconds: float) -> float:
        """Until `seconds` have passed (the requests in flight then finish). Returns the wall time from the start
        until the last request ended."""
        turn = itertools.count()
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker(w: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                i += 1
                n = next(turn)
                tenant = self.tenants[n % len(self.tenants)]
                # One request in `probe_every` is a probe, each tenant's in turn; of the others, every second streams.
                probe = (
                    self.args.probe_every > 0
                    and (n // len(self.tenants) + n % len(self.tenants)) % self.args.probe_every == 0
                )
                self.samples.append(await self.one(tenant, f"{w}.{i}", stream=n % 2 == 1 and not probe, probe=probe))

        await asyncio.gather(*(worker(w) for w in range(self.args.concurrency)))
        return time.perf_counter() - t0

    async def one(self, tenant: Tenant, tag: str, *, stream: bool, probe: bool) -> Sample:
        start = time.perf_counter()
        max_tokens = self.args.max_tokens
        messages = PROBE if probe else [{"role": "user", "content": f"Give me a short tip about gardening ({tag})."}]
        try:
            raw = await self.client(tenant.key).chat.completions.with_raw_response.create(
                model="sleepd", messages=messages, max_tokens=max_tokens, temperature=0,  # type: ignore[arg-type]
                stream=stream, stream_options={"include_usage": True} if stream else None,
                logprobs=True if probe else None, extra_body={"ignore_eos": True},
            )  # fmt: skip
            adapter = raw.headers.get("x-sleepd-adapter", "")
            parsed: Any = raw.parse()
            ttft, tokens, finish, probe_tokens = None, 0, None, None
            if stream:
                ttft, tokens, finish = await read_stream(parsed, start)
            else:
                choice = parsed.choices[0]
                finish, tokens = choice.finish_reason, parsed.usage.completion_tokens
                if probe and choice.logprobs and choice.logprobs.content:
                    probe_tokens = [t.token for t in choice.logprobs.content[: self.args.probe_tokens]]
            end, complete = time.perf_counter(), finish == "length" and tokens == max_tokens
            cut = "" if complete else f"cut: finish {finish}, {tokens} tokens"
            return Sample(tenant.name, start, end, complete, adapter, tenant.version, tokens, ttft, probe_tokens, cut)
        except Exception as exc:  # counted, not raised: the point is to count failures
            return Sample(tenant.name, start, time.perf_counter(), False, "", tenant.version, error=repr(exc)[:300])

    async def reference(self, tenant: Tenant) -> list[str]:
        """The probe's first tokens for `tenant`, asked alone (call on an idle server)."""
        raw = await self.client(tenant.key).chat.completions.create(
            model="sleepd", messages=PROBE, max_tokens=self.args.probe_tokens, temperature=0,  # type: ignore[arg-type]
            logprobs=True, extra_body={"ignore_eos": True},
        )  # fmt: skip
        content = raw.choices[0].logprobs.content if raw.choices[0].logprobs else None
        return [t.token for t in content or []]

    async def first_token(self, tenant: Tenant) -> tuple[float, str]:
        """(seconds to the first streamed token, version that served it) of one short request."""
        start = time.perf_counter()
        raw = await self.client(tenant.key).chat.completions.with_raw_response.create(
            model="sleepd", messages=PROBE, max_tokens=self.args.evict_max_tokens, temperature=0,  # type: ignore[arg-type]
            stream=True, extra_body={"ignore_eos": True},
        )  # fmt: skip
        first, parsed = None, raw.parse()
        assert isinstance(parsed, AsyncStream)
        async for chunk in parsed:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        return (first if first is not None else time.perf_counter() - start), raw.headers.get("x-sleepd-adapter", "")


def start_server(model: str, args: argparse.Namespace, workdir: Path, admin_token: str) -> tuple[str, Any]:
    port = free_port()
    env = {
        **os.environ, "SLEEPD_MODEL": model, "SLEEPD_PORT": str(port), "SLEEPD_REDIS_URL": args.redis_url,
        "SLEEPD_DATA_DIR": str(workdir / "data"), "SLEEPD_ADMIN_TOKEN": admin_token,
        "SLEEPD_MAX_MODEL_LEN": "2048", "SLEEPD_KV_CACHE_GIB": "2", "SLEEPD_MAX_LORAS": str(args.max_loras),
    }  # fmt: skip
    if args.max_lora_rank:
        env["SLEEPD_MAX_LORA_RANK"] = str(args.max_lora_rank)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - the child writes to it for its whole life
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, proc, "/ready")
    return base_url, proc


def phase_row(name: str, tenants: list[Tenant], samples: list[Sample], wall: float) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    answered = [s for s in samples if s.adapter]
    probes = [s for s in samples if s.ok and s.probe is not None]
    refs = {t.name: t.reference for t in tenants}
    streamed = [s.ttft for s in ok if s.ttft is not None]
    return {
        "phase": name,
        "tenants": len(tenants),
        "wall_s": round(wall, 2),
        "requests": len(samples),
        "tokens": sum(s.tokens for s in ok),
        "tok_per_s": round(sum(s.tokens for s in ok) / wall, 2),
        "req_per_s": round(len(ok) / wall, 3),
        "e2e_p50_s": round(pct([s.end - s.start for s in ok], 0.5), 3),
        "e2e_p99_s": round(pct([s.end - s.start for s in ok], 0.99), 3),
        "ttft_p50_s": round(pct(streamed, 0.5), 3),
        "ttft_p99_s": round(pct(streamed, 0.99), 3),
        "failed": len(samples) - len(ok),
        "adapter_mismatches": sum(s.adapter != s.expected for s in answered),
        "probes": len(probes),
        "probe_mismatches": sum(s.probe != refs[s.tenant] for s in probes),
        "errors": sorted({s.error for s in samples if s.error})[:5],
        "mismatch_examples": sorted(
            {f"{s.tenant}: got {s.adapter}, expected {s.expected}" for s in answered if s.adapter != s.expected}
        )[:5],
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


async def drive(base_url: str, model: str, admin_token: str, args: argparse.Namespace) -> dict[str, Any]:
    admin = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=300)

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await admin.post(path, json=body)
        if r.status_code != 200:
            raise RuntimeError(f"POST {path} {body}: {r.status_code} {r.text}")
        return r.json()  # type: ignore[no-any-return]

    rows: list[dict[str, Any]] = []

    async def measure(name: str, tenants: list[Tenant]) -> dict[str, Any]:
        load = Load(base_url, tenants, args)
        try:
            # Alone, on an idle server; this also warms up (each tenant's LoRA is loaded once) before the load.
            for t in tenants:
                if t.reference is None:
                    t0 = time.perf_counter()
                    t.reference = await load.reference(t)
                    t.alone_s = time.perf_counter() - t0
            wall = await load.run(args.seconds)
        finally:
            await load.close()
        row = phase_row(name, tenants, load.samples, wall)
        row["alone_p50_s"] = round(statistics.median(t.alone_s or 0.0 for t in tenants), 3)
        if rows:
            row["ratio_to_base"] = round(row["tok_per_s"] / rows[0]["tok_per_s"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    # 1. The open API: base model, no key.
    base = Tenant("default", None, BASE)
    await measure("base", [base])

    # Adapters for the tenants (published while the API is still open: registry writes, no load), then keys.
    names = [f"t{i:02d}" for i in range(1, args.max_tenants + 1)]
    srcs = [args.workdir / "src" / n for n in names]
    tenants: list[Tenant] = []
    t0 = time.perf_counter()
    for name, src in zip(names, srcs, strict=True):
        meta = await post("/admin/adapters", {"path": str(src), "tenant": name, "activate": True})
        tenants.append(Tenant(name, None, meta["version"]))
    publish_s = time.perf_counter() - t0

    # 2. Keyed mode, a tenant with no adapter (no LoRA; a zero adapter where vLLM's CPU ops are kept).
    zero = Tenant(ZERO_TENANT, (await post("/admin/keys", {"tenant": ZERO_TENANT}))["key"], BASE)
    await measure("keyed-base", [zero])
    for t in tenants:
        t.key = (await post("/admin/keys", {"tenant": t.name}))["key"]

    # 3. N tenants, each on its own adapter.
    for n in args.tenants:
        await measure(f"tenants-{n}", tenants[:n])

    # 4. First token after eviction, on an idle server.
    load = Load(base_url, tenants, args)
    warm, evicted, others, evict_mismatch, evict_failed, evict_errors = [], [], [], 0, 0, set()
    a, rest = tenants[0], tenants[1:]
    try:
        for rep in range(args.evict_reps):
            try:
                await load.first_token(a)  # load A (it may have been evicted by the phase before)
                w, v1 = await load.first_token(a)
                for k in range(args.max_loras):
                    o = rest[(rep * args.max_loras + k) % len(rest)]
                    t_o, v_o = await load.first_token(o)
                    others.append(t_o)
                    evict_mismatch += v_o != o.version
                e, v2 = await load.first_token(a)
                warm.append(w)
                evicted.append(e)
                evict_mismatch += (v1 != a.version) + (v2 != a.version)
                row = {"eviction_rep": rep + 1, "warm_ttft_s": round(w, 4), "after_eviction_ttft_s": round(e, 4),
                       "evicting_ttft_s": [round(x, 4) for x in others[-args.max_loras :]]}  # fmt: skip
                print(json.dumps(row), flush=True)
            except Exception as exc:  # counted, not raised: keep the phases measured so far
                evict_failed += 1
                evict_errors.add(repr(exc)[:300])
    finally:
        await load.close()
    await admin.aclose()

    refs = ["".join(t.reference or []) for t in tenants]
    base_ref = "".join(base.reference or [])
    eviction = {
        "reps": args.evict_reps,
        "evicting_tenants_per_rep": args.max_loras,
        "warm_ttft_median_s": round(statistics.median(warm), 4) if warm else None,
        "after_eviction_ttft_median_s": round(statistics.median(evicted), 4) if evicted else None,
        "paired_difference_median_s": round(statistics.median(e - w for e, w in zip(evicted, warm, strict=True)), 4)
        if warm
        else None,
        "other_tenants_ttft_median_s": round(statistics.median(others), 4) if others else None,
        "warm_ttft_s": [round(x, 4) for x in warm],
        "after_eviction_ttft_s": [round(x, 4) for x in evicted],
        "other_tenants_ttft_s": [round(x, 4) for x in others],
        "adapter_mismatches": evict_mismatch,
        "failed_reps": evict_failed,
        "errors": sorted(evict_errors)[:5],
    }
    print(json.dumps({"eviction": eviction}), flush=True)
    return {
        "phases": rows,
        "base_tok_per_s": rows[0]["tok_per_s"],
        "ratios_to_base": {r["phase"]: r.get("ratio_to_base") for r in rows[1:]},
        "failed": sum(r["failed"] for r in rows) + evict_failed,
        "adapter_mismatches": sum(r["adapter_mismatches"] for r in rows) + evict_mismatch,
        "probe_mismatches": {r["phase"]: r["probe_mismatches"] for r in rows},
        "references": {
            # The probe check has teeth only where adapters change the answer: how many tenants' answers differ
            # from the base model's and from each other's.
            "tenants": len(refs),
            "distinct_among_tenants": len(set(refs)),
            "differ_from_base": sum(r != base_ref for r in refs),
            "no_adapter_equals_base": "".join(zero.reference or []) == base_ref,
            "base": base_ref,
            "by_tenant": dict(zip([t.name for t in tenants], refs, strict=True)),
        },
        "eviction": eviction,
        "publish_s_per_adapter": round(publish_s / len(tenants), 3),
    }


def server_log_problems(path: Path) -> dict[str, Any]:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    bad = [ln for ln in lines if any(w in ln for w in ("ERROR", "Traceback", "CRITICAL", "Exception"))]
    warnings = [ln for ln in lines if "WARNING" in ln]
    return {"lines": len(lines), "error_lines": len(bad), "first_errors": bad[:10], "warning_lines": len(warnings),
            "first_warnings": warnings[:10]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="'default', 'tiny' (a tiny random Llama), or a model folder")
    ap.add_argument("--seconds", type=float, default=45, help="measured seconds per phase")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--tenants", type=int, nargs="+", default=[1, 4, 16], help="tenant counts, one phase each")
    ap.add_argument("--max-loras", type=int, default=4, help="SLEEPD_MAX_LORAS: the engine's LoRA slots")
    ap.add_argument("--max-lora-rank", type=int, default=0, help="SLEEPD_MAX_LORA_RANK (0: the server's default)")
    ap.add_argument(
        "--lora-scale",
        type=float,
        default=0.05,
        help="scale of the random LoRA weights (0.05: the default model's answers change, stay fluent)",
    )
    ap.add_argument("--probe-every", type=int, default=4, help="every n-th request of a client is a probe (0: none)")
    ap.add_argument("--probe-tokens", type=int, default=16)
    ap.add_argument("--evict-reps", type=int, default=5)
    ap.add_argument("--evict-max-tokens", type=int, default=4)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="flushed at the start")
    ap.add_argument("--workdir", type=Path, default=None, help="default: bench/results/tenants-<time>")
    ap.add_argument("--out", type=Path, default=None, help="also write the summary JSON here")
    args = ap.parse_args()
    args.max_tenants = max(args.tenants)
    if args.max_tenants <= args.max_loras:
        ap.error("the largest --tenants must exceed --max-loras (the eviction measurement needs it)")

    args.workdir = args.workdir or ROOT / "bench" / "results" / f"tenants-{time.strftime('%Y%m%d-%H%M%S')}"
    args.workdir.mkdir(parents=True)
    if args.model == "tiny":
        model = str(build_tiny_llama(ROOT / ".cache" / "models" / "tiny-llama"))
    else:
        model = resolve_model(args.model, ROOT / "data" / "models")
    machine = {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    t0 = time.perf_counter()
    for i in range(1, args.max_tenants + 1):  # rank 16 on all seven projections, as a sleep makes
        build_random_lora(Path(model), args.workdir / "src" / f"t{i:02d}", rank=16, seed=i, scale=args.lora_scale)
    build_s = time.perf_counter() - t0
    redis.Redis.from_url(args.redis_url).flushdb()
    admin_token = secrets.token_urlsafe(24)
    t0 = time.perf_counter()
    base_url, proc = start_server(model, args, args.workdir, admin_token)
    start_s = time.perf_counter() - t0
    try:
        result = asyncio.run(drive(base_url, model, admin_token, args))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    machine["loadavg_at_end"] = os.getloadavg()
    result["ok"] = result["failed"] == 0 and result["adapter_mismatches"] == 0
    result["timings_s"] = {"build_adapters": round(build_s, 1), "server_start": round(start_s, 1)}
    result["machine"] = machine
    result["server_log"] = server_log_problems(args.workdir / "server.log")
    result["config"] = {k: str(v) for k, v in vars(args).items()} | {"model_path": model}
    (args.workdir / "summary.json").write_text(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("config", "phases")}, indent=2), flush=True)


if __name__ == "__main__":
    main()
