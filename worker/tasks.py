"""Celery tasks: thin, idempotent, taking ids; the work is in worker/cycle.py and consolidation/."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready

from sleepd import keys
from sleepd.config import Settings
from sleepd.jobs import JobStore
from sleepd.sleep_queue import CHECK_TASK, ERASE_TASK, SLEEP_TASK, enqueue, start_pending_erasure
from sleepd.sleep_state import heartbeat, record_failure, trim_consolidated
from sleepd.tenants import tenants
from sleepd.window import decide_any, publish_decision
from worker.celery_app import celery_app
from worker.cycle import GaveUp, Preempted, TimedOut, release_slot, remove_snapshots, run_cycle
from worker.lock import LockHeld, LockLost

log = logging.getLogger(__name__)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    """Each worker process marks itself alive every 20 s (`sleepd_sleep_workers`, the SleepWorkerAbsent alert)."""
    name = str(getattr(sender, "hostname", None) or f"worker-{os.getpid()}")
    settings = Settings()

    def beat() -> None:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        while True:
            try:
                heartbeat(client, name)
            except redis.RedisError:
                pass  # Redis away: the gauge drops, which is what an operator should see
            time.sleep(20)

    threading.Thread(target=beat, daemon=True, name="sleepd-worker-heartbeat").start()


@celery_app.task(name=SLEEP_TASK, bind=True, acks_late=True, max_retries=None)
def sleep_cycle(self: Task, job_id: str, options: dict[str, Any]) -> dict[str, Any]:
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url)
    jobs = JobStore(client)
    try:
        result = run_cycle(job_id, options, settings, client)
        remove_snapshots(settings, jobs)
        publish_decision(client, decide_any(client, settings))  # /metrics shows the pending sessions after this cycle
        start_pending_erasure(client, settings)  # an erasure asked for while this cycle ran starts now
        return result
    except Preempted as exc:
        jobs.update(job_id, state="preempted", error=str(exc), resume_at=time.time() + settings.sleep_preempt_retry_s)
        raise self.retry(countdown=settings.sleep_preempt_retry_s, exc=exc) from exc
    except LockHeld as exc:
        # Another worker still holds the lock (e.g. a killed worker's TTL has not lapsed yet): try again shortly.
        raise self.retry(countdown=settings.sleep_lock_ttl_s, exc=exc) from exc
    except (SoftTimeLimitExceeded, Exception) as exc:
        log.exception("sleep %s failed", job_id)
        # Exception text can quote session content, and job records live for weeks: Redis gets the type and,
        # for sleepd's own errors (whose messages it writes), the message; the full text is in the worker log.
        own = isinstance(exc, TimedOut | GaveUp | LockLost)
        error = f"{type(exc).__name__}: {exc}" if own else f"{type(exc).__name__} (details in the worker log)"
        jobs.update(job_id, state="failed", error=error, finished_at=time.time())
        streak = record_failure(client, settings, error)
        log.warning("sleep: %d consecutive failure(s); %s", streak.count, streak.reason(time.time()))
        release_slot(client, job_id)
        remove_snapshots(settings, jobs)
        raise
    finally:
        client.close()


@celery_app.task(name=ERASE_TASK, bind=True, acks_late=True, max_retries=None)
def erase(self: Task, job_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """Make a tenant's adapters forget its erased sessions (worker/erase.py)."""
    from worker.erase import run_erasure

    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url)
    jobs = JobStore(client)
    try:
        result = run_erasure(job_id, options, settings, client)
        remove_snapshots(settings, jobs)
        start_pending_erasure(client, settings)
        return result
    except LockHeld as exc:
        raise self.retry(countdown=settings.sleep_lock_ttl_s, exc=exc) from exc
    except Exception as exc:
        # Not dropped: the erasure goes back to pending (the scheduler starts it again); its records are gone
        # from Redis already, and a sleep never publishes what an erased session taught (worker/cycle.py).
        log.exception("erasure %s failed", job_id)
        jobs.update(job_id, state="failed", error=f"{type(exc).__name__} (details in the worker log)",
                    finished_at=time.time())  # fmt: skip
        client.sadd(keys.ERASURES_PENDING, json.dumps({"tenant": options["tenant"], "all": bool(options.get("all"))}))
        release_slot(client, job_id)
        remove_snapshots(settings, jobs)
        raise
    finally:
        client.close()


@celery_app.task(name=CHECK_TASK)
def maybe_sleep() -> dict[str, Any]:
    """Beat's periodic check: start a pending erasure first, else a cycle for the tenant with the most pending
    session tokens when the window, the GPU and the pending sessions allow."""
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for tenant in tenants(client):
            trim_consolidated(client, settings, tenant=tenant)
        if (erasure := start_pending_erasure(client, settings)) is not None:
            return {"sleep": False, "job_id": erasure, "reasons": ["erasure pending"], "pending_tokens": 0}
        d = decide_any(client, settings)
        publish_decision(client, d)
        job = enqueue(client, {"trigger": "scheduler", "tenant": d.tenant}, settings) if d.sleep else None
        return {"sleep": d.sleep, "job_id": job, "reasons": d.reasons, "pending_tokens": d.pending_tokens,
                "tenant": d.tenant}  # fmt: skip
    finally:
        client.close()
