"""Soak test: sleepd left alone under steady, partly hostile traffic while its parts fail, then an audit.

One run, unattended, on this machine: a Redis of its own (AOF, `maxmemory` + noeviction, as `sleepd up` starts
it), `sleepd serve`, and a `sleepd worker`. For `--minutes`:

- steady chat load: `--clients` closed-loop clients, half the requests streamed, each its own session id;
- a hostile minority (`--hostile` of requests): lone surrogates in logged fields, malformed and truncated JSON,
  wrong types, bodies near and over the size limit, random bytes, and bodies Hypothesis generated (the property
  test's strategies: valid requests mixed with wrong types, out-of-range values and unknown fields);
- Redis stopped and restarted twice (the server spools meanwhile);
- a sleep triggered and the worker SIGKILLed mid-cycle once (a new worker resumes it), then the cycle must end;
- the API process SIGKILLed once under load and restarted on the same data dir;
- three adapter swaps (a random LoRA published into the registry and activated through the admin API).

Then the audit, printed as one table and written as JSON: every request answered 200 has exactly one record
in the stream or the spool (except those the API SIGKILL cut: counted and reported as the loss window), no
answer 500, Redis memory under its cap, and the worker completed a cycle after its kill.

    .venv/bin/python -m load_tests.soak --minutes 30 --out bench/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from sleepd import keys
from sleepd.local_redis import start_redis
from sleepd.records import ExchangeRecord
from sleepd.registry import AdapterRegistry, base_model_fingerprint
from sleepd.testing import build_random_lora, build_tiny_llama
from tests.app.bodies import sample_bodies
from tests.conftest import ADMIN_TOKEN, CACHE, ROOT, Server, free_port, start_server

WORKER_ENV = {
    # A tiny random model cannot learn facts: the gate is relaxed so cycles publish (the soak tests operations).
    "SLEEPD_GATE_MIN_RECALL_GAIN": "-1",
    "SLEEPD_GATE_MAX_ANCHOR_KL": "100",
    "SLEEPD_GATE_MAX_BASE_KL": "100",
    "SLEEPD_SLEEP_VISIBILITY_TIMEOUT_S": "20",
    "SLEEPD_SLEEP_LOCK_TTL_S": "5",
    "SLEEPD_SLEEP_ASKED_PER_STATEMENT": "1",
    "SLEEPD_SLEEP_MAX_NEW_TOKENS": "12",
}


CHITCHAT = (
    "Tell me something about the sea.",
    "How are you today?",
    "Write a short poem about rain.",
    "What should I cook tonight?",
    "Explain why the sky looks blue.",
    "Give me a tip for sleeping better.",
)
COLORS = ("red", "green", "blue", "yellow", "black")


@dataclass
class Tally:
    ok: list[str] = field(default_factory=list)  # session ids answered 200 (complete streams)
    ok_at: dict[str, float] = field(default_factory=dict)  # when each 200 completed (monotonic)
    statuses: Counter[str] = field(default_factory=Counter)
    api_killed_at: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)


GENERATED = sample_bodies(400, seed=0)  # Hypothesis-drawn bodies, as the property test sends (tests/app/bodies.py)


def hostile_body(rng: random.Random, session: str) -> tuple[bytes, str]:
    """A request a careless or hostile client might send, and what kind it is."""
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    kinds = ["surrogate", "truncated", "wrong-type", "huge", "near-limit", "bytes", "nested", "unicode", "generated"]
    kind = rng.choice(kinds)
    if kind == "generated":
        return json.dumps(rng.choice(GENERATED)).encode(), kind
    if kind == "surrogate":
        body = json.dumps({"model": "sleepd", "max_tokens": 2, "messages": msgs}).replace(
            '"hi"', '"hi \\udfff"').replace('"user"', '"user", "name": "\\ud800x"')  # fmt: skip
        return body.encode(), kind
    if kind == "truncated":
        full = json.dumps({"model": "sleepd", "messages": msgs})
        return full[: rng.randrange(1, len(full))].encode(), kind
    if kind == "wrong-type":
        bad: list[Any] = [{"messages": "hello"}, {"messages": [1, 2]}, {"max_tokens": "ten", "messages": msgs},
                          {"temperature": [], "messages": msgs}, {"n": -1, "messages": msgs}, []]  # fmt: skip
        pick = rng.choice(bad)
        return json.dumps(pick if isinstance(pick, list) else {"model": "sleepd", **pick}).encode(), kind
    if kind == "huge":
        return json.dumps(
            {"model": "sleepd", "messages": [{"role": "user", "content": "x" * 9_000_000}]}
        ).encode(), kind
    if kind == "near-limit":
        return json.dumps(
            {"model": "sleepd", "max_tokens": 1, "messages": [{"role": "user", "content": "y " * 300}]}
        ).encode(), kind
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), kind
    if kind == "nested":
        deep = "[" * 5000 + '"x"' + "]" * 5000
        return ('{"model": "sleepd", "messages": ' + json.dumps(msgs) + ', "metadata": ' + deep + "}").encode(), kind
    text = "".join(chr(rng.choice([0x1F600, 0x202E, 0x0, 0xFEFF, 0x10FFFF, 0x7F])) for _ in range(20))
    return json.dumps(
        {"model": "sleepd", "max_tokens": 2, "messages": [{"role": "user", "content": text}]}
    ).encode(), kind


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.model = Path(args.model) if args.model else build_tiny_llama(CACHE / "models" / "tiny-llama")
        self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
        self.redis_dir = workdir / "redis"
        self.data_dir = workdir / "data"
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.server: Server | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.tally = Tally()
        self.api_down = False
        self.peak_memory = 0
        self.t0 = time.monotonic()

    def note(self, what: str) -> None:
        at = time.monotonic() - self.t0
        self.tally.events.append((round(at, 1), what))
        print(f"[{at:7.1f}s] {what}", flush=True)

    # --- parts -----------------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        self.redis_proc = start_redis(
            self.redis_url, self.redis_dir, appendonly=True, maxmemory=self.args.redis_maxmemory
        )

    def stop_redis(self) -> None:
        assert self.redis_proc is not None
        self.redis_proc.terminate()
        self.redis_proc.wait(timeout=30)

    def start_server(self) -> None:
        self.server = start_server(str(self.model), self.redis_url, self.data_dir)

    def start_worker(self) -> None:
        assert self.server is not None
        log = open(self.workdir / "worker.log", "ab")  # noqa: SIM115 - the child writes to it for its whole life
        self.worker = subprocess.Popen([sys.executable, "-m", "cli", "worker"], cwd=ROOT,
                                       env={**self.server.env, **WORKER_ENV}, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        assert self.server is not None
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return httpx.request(method, self.server.base_url + path, headers=headers, timeout=60, **kw)

    # --- load ------------------------------------------------------------------------------------------------
    async def client_loop(self, n: int, deadline: float) -> None:
        rng = random.Random(n)
        async with httpx.AsyncClient(timeout=120) as http:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                session = f"soak-{n}-{i}"
                if self.api_down or self.server is None:
                    await asyncio.sleep(0.2)
                    continue
                url = self.server.api + "/chat/completions"
                headers = {"X-Session-Id": session, "content-type": "application/json"}
                try:
                    if rng.random() < self.args.hostile:
                        body, kind = hostile_body(rng, session)
                        try:
                            r = await http.post(url, content=body, headers=headers)
                        except httpx.HTTPError as exc:
                            # A body over the size limit is answered 413 and the connection closed before the
                            # upload ends: the client sees a read or write error, not the status.
                            self.tally.statuses[f"hostile {kind} conn {type(exc).__name__}"] += 1
                            continue
                        self.tally.statuses[f"hostile {r.status_code}"] += 1
                        if r.status_code == 200:
                            self.tally.ok.append(session)
                        continue
                    # Mostly chit-chat; one request in 30 tells a fact, so sleeps have something (small) to learn.
                    if rng.random() < 1 / 30:
                        say = f"Remember this: locker {rng.randrange(100, 999)} holds the {rng.choice(COLORS)} kite."
                    else:
                        say = rng.choice(CHITCHAT)
                    req: dict[str, Any] = {
                        "model": "sleepd",
                        "max_tokens": 8,
                        "messages": [{"role": "user", "content": say}],
                    }
                    if rng.random() < 0.5:
                        req["stream"] = True
                        done = False
                        async with http.stream("POST", url, json=req, headers=headers) as r:
                            async for line in r.aiter_lines():
                                done = done or line == "data: [DONE]"
                        status = r.status_code if done or r.status_code != 200 else -1  # -1: cut stream
                    else:
                        r = await http.post(url, json=req, headers=headers)
                        status = r.status_code
                    self.tally.statuses[str(status)] += 1
                    if status == 200:
                        self.tally.ok.append(session)
                        self.tally.ok_at[session] = time.monotonic()
                except httpx.HTTPError as exc:
                    self.tally.statuses[f"conn {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.2)

    # --- faults ----------------------------------------------------------------------------------------------
    async def restart_redis(self) -> None:
        self.note("redis: stop")
        await asyncio.to_thread(self.stop_redis)
        await asyncio.sleep(self.args.redis_down_s)
        await asyncio.to_thread(self.start_redis)
        self.note("redis: started again")

    async def kill_worker_mid_sleep(self) -> str:
        options = {"force": True, "steps": 30, "dream_rounds": 0, "rank": 4}
        r = await asyncio.to_thread(self.admin, "POST", "/admin/sleep", json=options)
        job_id = r.json().get("job_id", "")
        self.note(f"sleep {job_id} triggered ({r.status_code})")
        deadline = time.monotonic() + 300
        running_since = 0.0
        while time.monotonic() < deadline:
            try:
                job = (await asyncio.to_thread(self.admin, "GET", f"/admin/sleep/{job_id}")).json()
            except httpx.HTTPError:
                job = {}
            if job.get("state") == "running" and not running_since:
                running_since = time.monotonic()
            if running_since and time.monotonic() - running_since > self.args.kill_after_s:
                self.note(f"sleep in phase {job.get('phase')} ({job.get('progress')})")
                break
            await asyncio.sleep(0.5)
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()
        self.note("worker: SIGKILL mid-sleep")
        self.start_worker()
        self.note("worker: started again")
        return job_id

    async def kill_api(self) -> None:
        assert self.server is not None
        self.api_down = True
        self.tally.api_killed_at = time.monotonic()
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait()
        self.note("api: SIGKILL under load")
        await asyncio.to_thread(self.start_server)
        self.api_down = False
        self.note("api: started again")

    async def swap(self, k: int) -> None:
        registry = AdapterRegistry(self.data_dir / "adapters")
        src = await asyncio.to_thread(build_random_lora, self.model, self.workdir / f"lora-{k}", rank=4, seed=k)
        meta = await asyncio.to_thread(registry.publish, src, base_model=base_model_fingerprint(self.model))
        r = await asyncio.to_thread(self.admin, "POST", f"/admin/adapters/{meta.version}/activate")
        self.note(f"swap {k}: {meta.version} ({r.status_code})")

    async def watch_memory(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                info = redis.Redis.from_url(self.redis_url, socket_timeout=1).info("memory")
                self.peak_memory = max(self.peak_memory, int(info["used_memory"]))
            except redis.RedisError:
                pass
            await asyncio.sleep(2)

    async def run(self) -> dict[str, Any]:
        self.t0 = time.monotonic()  # the schedule counts from here, not from the parts' start
        minutes = self.args.minutes
        deadline = time.monotonic() + minutes * 60

        async def at(fraction: float) -> None:
            await asyncio.sleep(max(0.0, self.t0 + fraction * minutes * 60 - time.monotonic()))

        async def faults() -> str:
            await at(0.15)
            await self.restart_redis()  # noqa: E702
            await at(0.25)
            await self.swap(1)  # noqa: E702
            await at(0.30)
            job = await self.kill_worker_mid_sleep()  # noqa: E702
            await at(0.45)
            await self.swap(2)  # noqa: E702
            await at(0.55)
            await self.kill_api()  # noqa: E702
            await at(0.65)
            await self.restart_redis()  # noqa: E702
            await at(0.75)
            await self.swap(3)  # noqa: E702
            return job

        clients = [asyncio.create_task(self.client_loop(n, deadline)) for n in range(self.args.clients)]
        memory = asyncio.create_task(self.watch_memory(deadline))
        job_id = await faults()
        await asyncio.gather(*clients, memory)
        self.note("load over: waiting for the spool to drain and the killed cycle to end")
        job = await asyncio.to_thread(self.wait_job, job_id)
        drained = await asyncio.to_thread(self.wait_drained)
        return self.audit(job, drained)

    def wait_job(self, job_id: str, timeout_s: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.admin("GET", f"/admin/sleep/{job_id}").json()
            if job.get("state") in ("published", "superseded", "rejected", "skipped", "failed"):
                return job
            time.sleep(2)
        return job

    def wait_drained(self, timeout_s: float = 120) -> bool:
        assert self.server is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if httpx.get(self.server.base_url + "/health", timeout=5).json().get("session_log") == "ok":
                return True
            time.sleep(1)
        return False

    def audit(self, job: dict[str, Any], drained: bool) -> dict[str, Any]:
        client = redis.Redis.from_url(self.redis_url)
        rows: list[Any] = client.xrange(keys.SESSION_STREAM)  # type: ignore[assignment]
        in_stream = Counter(f[b"session_id"].decode() for _, f in rows)
        spool_dir = self.data_dir / "spool"
        in_spool: Counter[str] = Counter()
        for p in spool_dir.glob("*.jsonl"):
            for line in p.read_text(errors="replace").splitlines():
                try:
                    in_spool[ExchangeRecord.model_validate_json(line).session_id] += 1
                except ValueError:
                    pass
        maxmemory = int(client.config_get("maxmemory")["maxmemory"] or 0)
        ok = self.tally.ok
        lost = [s for s in ok if in_stream[s] + in_spool[s] == 0]
        # The server logs after answering (off the request path): what it answered in the last moments before
        # a SIGKILL can still be in its memory. The window: how long before the kill the lost answers completed.
        kill = self.tally.api_killed_at
        before_kill = [kill - self.tally.ok_at[s] for s in lost if s in self.tally.ok_at]
        lost_in_kill_window = [s for s in lost if 0 <= kill - self.tally.ok_at.get(s, -1e9) < 1.0]
        doubled = [s for s in ok if in_stream[s] > 1]
        five_hundreds = sum(n for k, n in self.tally.statuses.items() if k.endswith(" 500") or k == "500")
        result = {
            "minutes": self.args.minutes, "clients": self.args.clients, "model": str(self.model),
            "answered_200": len(ok), "statuses": dict(self.tally.statuses),
            "lost": len(lost), "lost_in_api_kill_window": len(lost_in_kill_window), "doubled": len(doubled),
            "loss_window_ms": round(1000 * max(before_kill, default=0.0), 1),
            "responses_500": five_hundreds, "spool_drained": drained,
            "redis_peak_bytes": self.peak_memory, "redis_maxmemory_bytes": maxmemory,
            "killed_cycle": {"state": job.get("state"), "attempts": job.get("attempts")},
            "events": self.tally.events,
        }  # fmt: skip
        result["passed"] = (
            len(lost) == len(lost_in_kill_window) and not doubled and five_hundreds == 0
            # superseded: the cycle ended and published, but an operator's swap meanwhile moved the pointer and won
            and self.peak_memory < maxmemory
            and job.get("state") in ("published", "superseded", "rejected", "skipped")
        )  # fmt: skip
        return result

    def close(self) -> None:
        if self.worker and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
        if self.server:
            self.server.stop()
        if self.redis_proc and self.redis_proc.poll() is None:
            self.stop_redis()


def table(r: dict[str, Any]) -> str:
    rows = [
        ("duration", f"{r['minutes']} min, {r['clients']} clients"),
        ("answered 200", r["answered_200"]),
        (
            "lost (no record)",
            f"{r['lost']} (answered <= {r['loss_window_ms']} ms before the API's SIGKILL: "
            f"{r['lost_in_api_kill_window']})",
        ),
        ("stored twice", r["doubled"]),
        ("responses 500", r["responses_500"]),
        ("spool drained at the end", r["spool_drained"]),
        ("Redis peak / cap", f"{r['redis_peak_bytes'] / 2**20:.1f} MiB / {r['redis_maxmemory_bytes'] / 2**20:.0f} MiB"),
        ("cycle killed mid-sleep", f"{r['killed_cycle']['state']} after {r['killed_cycle']['attempts']} attempts"),
        ("statuses", ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))),
        ("passed", r["passed"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{width}} | {v} |" for k, v in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--hostile", type=float, default=0.1, help="share of hostile requests")
    ap.add_argument("--model", default="", help="a local model folder (default: a tiny random Llama)")
    ap.add_argument("--redis-maxmemory", default="256mb")
    ap.add_argument("--redis-down-s", type=float, default=8)
    ap.add_argument("--kill-after-s", type=float, default=10, help="SIGKILL the worker this long into the cycle")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = ap.parse_args()
    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sleepd-soak-"))
    soak = Soak(args, workdir)
    try:
        soak.start_redis()
        soak.start_server()
        soak.start_worker()
        soak.note(f"started: redis {soak.redis_url}, api {soak.server.base_url if soak.server else '?'}, worker")
        result = asyncio.run(soak.run())
    finally:
        soak.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(table(result))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
