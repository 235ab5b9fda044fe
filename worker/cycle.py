"""One sleep cycle as the worker runs it: snapshot -> Knowledge Seeding -> Dreaming -> gate -> publish.

Crash safety: the snapshot of sessions (records after the watermark) is written once per job and reused on
redelivery, so a resumed cycle learns from the same sessions. The adapter reaches the registry only through
its atomic publish, and `published.json` records it, so a cycle killed after publishing finishes the pointer
and watermark steps instead of training again. The watermark moves only once an adapter including the
sessions is active (or after `sleep_max_rejections` gate rejections, so a bad batch cannot block forever):
until then every session stays pending. Training progress inside a phase is not checkpointed: a preempted or
killed cycle restarts seeding from its snapshot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from sleepd import keys
from sleepd.active_adapter import Fence, PointerConflict, PointerFenced, read_active, write_active
from sleepd.config import Settings
from sleepd.durable import private
from sleepd.erasure import erased
from sleepd.jobs import TERMINAL, JobStore
from sleepd.keys import DEFAULT_TENANT
from sleepd.models import resolve_model
from sleepd.records import ExchangeRecord
from sleepd.registry import BASE, AdapterRegistry, base_model_fingerprint
from sleepd.sleep_state import advance_watermark, clear_failures
from sleepd.window import current_traffic
from worker.lock import LockLost, SleepLock

log = logging.getLogger(__name__)


class Preempted(Exception):
    """Traffic rose during the cycle: stop now, resume later from the snapshot."""


class TimedOut(Exception):
    """The cycle ran past SLEEPD_SLEEP_SOFT_TIME_LIMIT_S (checked at every progress report)."""


class GaveUp(Exception):
    """The cycle was delivered SLEEPD_SLEEP_MAX_ATTEMPTS times without ending (killed, hung)."""


@contextlib.contextmanager
def watchdog(limit_s: float, job_id: str) -> Iterator[None]:
    """Hard time limit that holds in the solo pool too (Celery enforces its limits only in prefork children):
    a cycle hung past `limit_s` (a stuck kernel, a deadlock: no progress report to raise from) ends the
    process. Its lock lapses with the heartbeat; the message is redelivered and counts as one more attempt."""
    done = threading.Event()

    def bite() -> None:
        if not done.wait(limit_s):
            log.critical("sleep %s: hung past the hard limit of %.0f s; exiting the worker process", job_id, limit_s)
            logging.shutdown()
            os._exit(70)

    threading.Thread(target=bite, daemon=True, name="sleep-watchdog").start()
    try:
        yield
    finally:
        done.set()


def run_cycle(job_id: str, options: dict[str, Any], settings: Settings, client: redis.Redis) -> dict[str, Any]:
    jobs = JobStore(client)
    job = jobs.get(job_id)
    if job and job["state"] in TERMINAL:
        return job  # a redelivered message for a finished cycle: nothing to do (idempotent)
    owner = f"{job_id}:{uuid.uuid4().hex[:8]}"
    lock = SleepLock(client, owner, settings.sleep_lock_ttl_s, job_id=job_id,
                     slot_ttl_s=settings.sleep_visibility_timeout_s)  # fmt: skip
    with watchdog(settings.sleep_soft_time_limit_s + 300, job_id), lock:
        # Counted once the lock is ours: waiting for a killed predecessor's lock to lapse is not an attempt.
        attempts = int((jobs.get(job_id) or {}).get("attempts", 0))
        if attempts >= settings.sleep_max_attempts:
            raise GaveUp(f"{attempts} attempts started and none ended (worker killed or hung each time)")
        jobs.update(job_id, state="running", phase="snapshot", started_at=time.time(), attempts=attempts + 1)
        workdir = settings.data_dir / "sleep" / job_id
        workdir.mkdir(parents=True, exist_ok=True)
        tenant = str(options.get("tenant") or DEFAULT_TENANT)
        records, upto = _snapshot(client, workdir, tenant)
        if not records:
            advance_watermark(client, upto, tenant)  # only opted-out exchanges: none will ever be learned
            jobs.update(job_id, state="skipped", phase="done", progress=1.0, finished_at=time.time(),
                        error="no new sessions since the last consolidation")  # fmt: skip
            _finish(client, job_id)
            return jobs.get(job_id) or {}
        published = _load_json(workdir / "published.json")
        if published is None:
            published = _consolidate(job_id, options, settings, client, jobs, records, workdir, tenant)
        lock.check()  # a holder that lost the lock (paused past its TTL) must not move the pointer
        gone = erased(client, tenant) & {r.session_id for r in records}
        if gone:
            # A session in this snapshot was erased while the cycle ran: what it trained must never be served.
            # The candidate is purged; the other sessions stay pending (their records are still in Redis).
            if published.get("version"):
                AdapterRegistry(settings.adapters_dir).purge(published["version"])
            jobs.update(job_id, state="superseded", phase="done", progress=1.0, finished_at=time.time(),
                        error=f"{len(gone)} session(s) in this cycle were erased while it ran; nothing published",
                        metrics=published.get("gate", {}))  # fmt: skip
            _finish(client, job_id)
            return jobs.get(job_id) or {}
        if published.get("nothing_to_learn"):
            # Chit-chat with no name, number or date in it: nothing to consolidate, nothing to retry.
            advance_watermark(client, upto, tenant)
            state = "skipped"
        elif published.get("version"):
            # One compare-and-set: from the version this sleep built on, and only while our fencing token holds.
            parent, fence = published.get("parent") or BASE, Fence(lock.token, lock.owner)
            try:
                write_active(client, published["version"], expected=parent, reason="sleep", fence=fence, tenant=tenant)
            except PointerFenced as exc:
                raise LockLost(str(exc)) from exc
            except PointerConflict as exc:
                # An operator moved the pointer while this sleep ran (a rollback): theirs wins. The adapter stays
                # in the registry; the sessions stay pending for the next sleep, on top of what is active now.
                jobs.update(job_id, state="superseded", phase="done", progress=1.0, finished_at=time.time(),
                            error=str(exc), metrics=published.get("gate", {}), report=published,
                            version=published["version"])  # fmt: skip
                _finish(client, job_id)
                return jobs.get(job_id) or {}
            advance_watermark(client, upto, tenant)
            client.delete(keys.sleep_rejections(tenant))
            state = "published"
        else:
            rejections = int(client.incr(keys.sleep_rejections(tenant)))  # type: ignore[arg-type]
            if rejections >= settings.sleep_max_rejections:
                # Bounded retries: set these sessions aside rather than block every later sleep on them.
                advance_watermark(client, upto, tenant)
                client.delete(keys.sleep_rejections(tenant))
                published["note"] = f"rejected {rejections} times: sessions up to {upto} set aside"
            state = "rejected"
        built = published.get("version") or f"{state}-on-{published.get('parent') or BASE}"  # rejected, skipped
        jobs.update(job_id, state=state, phase="done", progress=1.0, finished_at=time.time(),
                    metrics=published.get("gate", {}), report=published, version=built)  # fmt: skip
    _finish(client, job_id)
    return jobs.get(job_id) or {}


def _consolidate(
    job_id: str, options: dict[str, Any], settings: Settings, client: redis.Redis, jobs: JobStore,
    records: list[ExchangeRecord], workdir: Path, tenant: str = DEFAULT_TENANT, active: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train, gate and publish into the registry (not the pointer). `active`: the version to build on (default:
    the tenant's active one; an erasure rebuilds from the last clean ancestor)."""
    # Imported here: torch and transformers load only in the process that trains.
    from consolidation.from_settings import sleep_config
    from consolidation.sleep import run_sleep

    steps, rounds = options.get("steps"), options.get("dream_rounds")
    cfg = sleep_config(
        settings, rank=int(options["rank"]) if options.get("rank") else None, steps=int(steps) if steps else None,
        dream_rounds=int(rounds) if rounds is not None else None, tenant=tenant,
    )  # fmt: skip
    force = bool(options.get("force"))
    deadline = time.monotonic() + settings.sleep_soft_time_limit_s
    phases: dict[str, float] = {}
    started: dict[str, Any] = {"phase": "prepare", "at": time.monotonic(), "checked": 0.0}

    def progress(phase: str, done: float, details: dict[str, Any]) -> None:
        now = time.monotonic()
        if phase != started["phase"]:
            phases[started["phase"]] = round(now - started["at"], 2)
            started.update(phase=phase, at=now)
        weights = {"prepare": (0.0, 0.15), "seeding": (0.15, 0.6), "dreaming": (0.75, 0.15), "gate": (0.9, 0.1)}
        lo, span = weights.get(phase, (1.0, 0.0))
        info = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in details.items()})
        jobs.update(job_id, phase=phase, progress=round(lo + span * done, 4), phases=phases, info=info)
        if now > deadline:
            raise TimedOut(f"past the soft time limit of {settings.sleep_soft_time_limit_s} s (in {phase})")
        # Preemption: checked at most every sleep_preempt_check_s; an operator's forced sleep is not preempted.
        if not force and now - started["checked"] >= settings.sleep_preempt_check_s:
            started["checked"] = now
            if current_traffic(client) > settings.sleep_traffic_threshold:
                raise Preempted(f"traffic above {settings.sleep_traffic_threshold}/min")

    active = read_active(client, tenant) if active is None else active
    base = Path(resolve_model(settings.model, settings.models_dir))
    registry = AdapterRegistry(settings.adapters_dir)
    if active != BASE:
        # Build only on the previous adapter as it was published: corrupt files would be carried into every later one.
        registry.verify(active, base_model_fingerprint(base))
    report = run_sleep(base, records, registry, active, cfg, progress)
    summary = report.summary()
    summary["version"] = report.published.version if report.published else None
    summary["nothing_to_learn"] = report.nothing_to_learn
    _write_json(workdir / "published.json", summary)
    return summary


def _snapshot(client: redis.Redis, workdir: Path, tenant: str) -> tuple[list[ExchangeRecord], str]:
    """The sessions this job learns from, fixed at its first attempt (the tenant's records after its watermark)."""
    path, meta = workdir / "sessions.jsonl", workdir / "snapshot.json"
    if meta.exists():
        upto = json.loads(meta.read_text())["upto"]
        return [ExchangeRecord.model_validate_json(line) for line in path.read_text().splitlines() if line], upto
    start = client.get(keys.sleep_watermark(tenant))
    lo = f"({start.decode() if isinstance(start, bytes) else start}" if start else "-"
    rows: list[Any] = client.xrange(keys.session_stream(tenant), min=lo, count=100_000) or []
    # Exchanges the client opted out of learning (X-Sleepd-Learn: off, or its key's policy) never enter a snapshot.
    records = [r for r in (ExchangeRecord.model_validate_json(fields[b"data"]) for _, fields in rows) if r.learn]
    upto = rows[-1][0].decode() if rows else (start.decode() if isinstance(start, bytes) else "0-0")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", opener=private) as out:
        out.write("".join(r.model_dump_json() + "\n" for r in records))
    os.replace(tmp, path)
    _write_json(meta, {"upto": upto, "records": len(records)})
    return records, upto


def _finish(client: redis.Redis, job_id: str) -> None:
    """A cycle ended (not failed): the failure streak is over and the next cycle may start."""
    clear_failures(client)
    release_slot(client, job_id)


def release_slot(client: redis.Redis, job_id: str) -> None:
    client.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end", 1,
                keys.SLEEP_ACTIVE, job_id)  # fmt: skip


def remove_snapshots(settings: Settings, jobs: JobStore) -> None:
    """Delete the session snapshots of cycles that will not run again (terminal, or unknown to Redis): each
    holds a copy of session text, which must not outlive its job (privacy, disk)."""
    root = settings.data_dir / "sleep"
    if not root.is_dir():
        return
    for workdir in root.iterdir():
        job = jobs.get(workdir.name)
        if job is None or job.get("state") in TERMINAL:
            shutil.rmtree(workdir, ignore_errors=True)


def _load_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)
