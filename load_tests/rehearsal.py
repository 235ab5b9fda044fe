"""Two-node rehearsal on one machine (loopback only): two API servers behind HAProxy, two sleep workers, one
Redis, one shared adapter registry folder, each server with its own data dir (spool). Under steady chat load
through the proxy:

1. an adapter published into the shared registry and activated once reaches both servers (time until each
   reports it), with the requests failed during that phase counted (goal 0);
2. two sleeps triggered at once on the two servers: one is queued, the other refused (409), and sampling the
   job records and the lock through the cycle never shows two cycles running;
3. one API server SIGKILLed under load and restarted: HAProxy routes around it; every request answered 200
   has exactly one record in the stream or a spool (no logged session lost).

    .venv/bin/python -m load_tests.rehearsal --out bench/results/rehearsal.json

Needs Debian's haproxy (`apt-get install haproxy`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis

from load_tests.soak import CHITCHAT, WORKER_ENV
from sleepd import keys
from sleepd.local_redis import start_redis
from sleepd.records import ExchangeRecord
from sleepd.registry import AdapterRegistry, base_model_fingerprint
from sleepd.testing import build_random_lora, build_tiny_llama
from tests.conftest import ADMIN_TOKEN, CACHE, ROOT, Server, free_port, start_server

HAPROXY_CFG = """
global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 2
    option redispatch
listen sleepd
    bind 127.0.0.1:{port}
    balance roundrobin
    option httpchk GET /ready
    default-server inter 500ms fall 2 rise 2
{servers}
"""


class Rehearsal:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.model = build_tiny_llama(CACHE / "models" / "tiny-llama")
        self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
        self.registry = workdir / "shared-registry"
        self.servers: list[Server] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.proxy_port = free_port()
        self.phase = "warm-up"
        self.ok: dict[str, float] = {}
        self.statuses: Counter[str] = Counter()
        self.events: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self.stopping = False

    def note(self, what: str) -> None:
        at = round(time.monotonic() - self.t0, 1)
        self.events.append((at, what))
        print(f"[{at:7.1f}s] {what}", flush=True)

    def start(self) -> None:
        self.procs.append(start_redis(self.redis_url, self.workdir / "redis", appendonly=True, maxmemory="256mb"))
        for i in range(2):
            self.servers.append(self.start_server(i))
        for i in range(2):
            self.workers.append(self.start_worker(i))
        servers = "\n".join(
            f"    server api{i} {s.base_url.removeprefix('http://')} check" for i, s in enumerate(self.servers)
        )
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=self.proxy_port, servers=servers))
        log = open(self.workdir / "haproxy.log", "wb")  # noqa: SIM115 - the child writes to it for its whole life
        self.procs.append(subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT))
        time.sleep(2)

    def start_server(self, i: int) -> Server:
        return start_server(str(self.model), self.redis_url, self.workdir / f"api{i}",
                            SLEEPD_REGISTRY_DIR=str(self.registry))  # fmt: skip

    def start_worker(self, i: int) -> subprocess.Popen[bytes]:
        env = {**self.servers[0].env, **WORKER_ENV, "SLEEPD_DATA_DIR": str(self.workdir / f"worker{i}"),
               "SLEEPD_REGISTRY_DIR": str(self.registry)}  # fmt: skip
        log = open(self.workdir / f"worker{i}.log", "ab")  # noqa: SIM115 - the child writes to it for its whole life
        return subprocess.Popen([sys.executable, "-m", "cli", "worker"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def admin(self, server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return httpx.request(method, server.base_url + path, headers=headers, timeout=60, **kw)

    async def client(self, n: int) -> None:
        rng = random.Random(n)
        url = f"http://127.0.0.1:{self.proxy_port}/v1/chat/completions"
        async with httpx.AsyncClient(timeout=120) as http:
            i = 0
            while not self.stopping:
                i += 1
                session = f"rehearsal-{n}-{i}"
                say = rng.choice(CHITCHAT)
                if rng.random() < 1 / 20:
                    say = f"Remember this: locker {rng.randrange(100, 999)} holds the red kite."
                body = {"model": "sleepd", "max_tokens": 8, "messages": [{"role": "user", "content": say}]}
                phase = self.phase
                try:
                    r = await http.post(url, json=body, headers={"X-Session-Id": session})
                    self.statuses[f"{phase} {r.status_code}"] += 1
                    if r.status_code == 200:
                        self.ok[session] = time.monotonic()
                except httpx.HTTPError as exc:
                    self.statuses[f"{phase} conn {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.1)

    async def publish_phase(self) -> dict[str, Any]:
        self.phase = "publish"
        reg = AdapterRegistry(self.registry)
        src = await asyncio.to_thread(build_random_lora, self.model, self.workdir / "lora", rank=4, seed=7)
        meta = await asyncio.to_thread(reg.publish, src, base_model=base_model_fingerprint(self.model))
        t = time.monotonic()
        r = await asyncio.to_thread(self.admin, self.servers[0], "POST", f"/admin/adapters/{meta.version}/activate")
        self.note(f"activated {meta.version} through api0 ({r.status_code})")
        reached: dict[str, float] = {}
        while len(reached) < 2 and time.monotonic() - t < 120:
            for i, s in enumerate(self.servers):
                if f"api{i}" in reached:
                    continue
                try:
                    models = (await asyncio.to_thread(httpx.get, s.api + "/models", timeout=5)).json()
                    if models["data"][0]["sleepd_adapter"] == meta.version:
                        reached[f"api{i}"] = round(time.monotonic() - t, 2)
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
            await asyncio.sleep(0.1)
        self.note(f"{meta.version} reached {reached}")
        await asyncio.sleep(5)  # keep the load on while both serve it (and merge it)
        return {"version": meta.version, "seconds_to_reach": reached}

    async def sleep_phase(self) -> dict[str, Any]:
        self.phase = "sleep"
        options = {"force": True, "steps": 4, "dream_rounds": 0, "rank": 4}
        a, b = await asyncio.gather(
            asyncio.to_thread(self.admin, self.servers[0], "POST", "/admin/sleep", json=options),
            asyncio.to_thread(self.admin, self.servers[1], "POST", "/admin/sleep", json=options),
        )
        codes = sorted([a.status_code, b.status_code])
        job_id = (a if a.status_code == 200 else b).json().get("job_id", "")
        self.note(f"two triggers at once: {codes}, job {job_id}")
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        most_running, state = 0, ""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ids: list[str] = client.lrange(keys.SLEEP_JOBS, 0, 20)  # type: ignore[assignment]
            states = [str(client.hget(keys.sleep_job(i), "state") or "") for i in ids]
            most_running = max(most_running, states.count("running"))
            state = str(client.hget(keys.sleep_job(job_id), "state") or "")
            if state in ("published", "superseded", "rejected", "skipped", "failed"):
                break
            await asyncio.sleep(0.5)
        self.note(f"sleep {job_id}: {state}")
        return {"triggers": codes, "job": job_id, "state": state, "most_running_at_once": most_running}

    async def kill_phase(self) -> dict[str, Any]:
        self.phase = "api-kill"
        victim = self.servers[1]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        killed_at = time.monotonic()
        self.note("api1: SIGKILL under load")
        self.servers[1] = await asyncio.to_thread(self.start_server, 1)
        self.note(f"api1: started again after {time.monotonic() - killed_at:.0f} s")
        self.phase = "after"
        return {"restart_s": round(time.monotonic() - killed_at, 1)}

    async def run(self) -> dict[str, Any]:
        self.t0 = time.monotonic()
        clients = [asyncio.create_task(self.client(n)) for n in range(self.args.clients)]
        await asyncio.sleep(10)
        result: dict[str, Any] = {"publish": await self.publish_phase()}
        result["sleep"] = await self.sleep_phase()
        result["kill"] = await self.kill_phase()
        await asyncio.sleep(self.args.after_s)  # load on both servers again
        self.stopping = True
        await asyncio.gather(*clients)
        await asyncio.sleep(3)  # the log is asynchronous
        return result | self.audit()

    def audit(self) -> dict[str, Any]:
        client = redis.Redis.from_url(self.redis_url)
        rows: list[Any] = client.xrange(keys.SESSION_STREAM)  # type: ignore[assignment]
        in_stream = Counter(f[b"session_id"].decode() for _, f in rows)
        in_spool: Counter[str] = Counter()
        for p in self.workdir.glob("api*/spool/*.jsonl"):
            for line in p.read_text(errors="replace").splitlines():
                try:
                    in_spool[ExchangeRecord.model_validate_json(line).session_id] += 1
                except ValueError:
                    pass
        lost = [s for s in self.ok if in_stream[s] + in_spool[s] == 0]
        failed = {k: v for k, v in self.statuses.items() if not k.endswith(" 200")}
        return {
            "answered_200": len(self.ok), "lost": len(lost), "doubled": sum(1 for s in self.ok if in_stream[s] > 1),
            "statuses": dict(self.statuses), "failed_by_phase": failed, "events": self.events,
        }  # fmt: skip

    def close(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGTERM)
        for s in self.servers:
            s.stop()
        for p in self.procs:
            p.terminate()
        for w in self.workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(w.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--after-s", type=float, default=30, help="load after the killed server is back")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rehearsal.json")
    args = ap.parse_args()
    if shutil.which("haproxy") is None:
        sys.exit("haproxy not found: apt-get install haproxy")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sleepd-rehearsal-"))
    r = Rehearsal(args, workdir)
    try:
        r.start()
        r.note(f"started: proxy :{r.proxy_port}, api {[s.base_url for s in r.servers]}, 2 workers")
        result = asyncio.run(r.run())
    finally:
        r.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "events"}, indent=1))
    passed = (
        result["lost"] == 0 and result["doubled"] == 0
        and not any(k.startswith("publish") for k in result["failed_by_phase"])
        and result["sleep"]["triggers"] == [200, 409] and result["sleep"]["most_running_at_once"] <= 1
    )  # fmt: skip
    print("passed" if passed else "FAILED")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
