"""Celery tasks: thin, idempotent, taking ids; the work is in worker/cycle.py and consolidation/."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from sleepd import keys
from sleepd.config import Settings
from worker.celery_app import CHECK_TASK, SLEEP_TASK, celery_app
from worker.cycle import Preempted, run_cycle
from worker.jobs import JobStore
from worker.lock import LockHeld
from worker.window import decide

log = logging.getLogger(__name__)


def new_job_id() -> str:
    return f"sleep-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def enqueue(client: redis.Redis, options: dict[str, Any], settings: Settings) -> str | None:
    """Start a cycle unless one is queued or running (SET NX: of two triggers at once, one wins). Returns the
    job id, or None if another cycle holds the slot."""
    job_id = new_job_id()
    if not client.set(keys.SLEEP_ACTIVE, job_id, nx=True, ex=settings.sleep_visibility_timeout_s):
        return None
    JobStore(client).create(job_id, options)
    celery_app.send_task(SLEEP_TASK, args=[job_id, options], task_id=job_id)
    return job_id


@celery_app.task(name=SLEEP_TASK, bind=True, acks_late=True, max_retries=None)
def sleep_cycle(self: Task, job_id: str, options: dict[str, Any]) -> dict[str, Any]:
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url)
    jobs = JobStore(client)
    try:
        return run_cycle(job_id, options, settings, client)
    except Preempted as exc:
        jobs.update(job_id, state="preempted", error=str(exc), resume_at=time.time() + settings.sleep_preempt_retry_s)
        raise self.retry(countdown=settings.sleep_preempt_retry_s, exc=exc) from exc
    except LockHeld as exc:
        # Another worker still holds the lock (e.g. a killed worker's TTL has not lapsed yet): try again shortly.
        raise self.retry(countdown=settings.sleep_lock_ttl_s, exc=exc) from exc
    except (SoftTimeLimitExceeded, Exception) as exc:
        log.exception("sleep %s failed", job_id)
        jobs.update(job_id, state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=time.time())
        client.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end", 1,
                    keys.SLEEP_ACTIVE, job_id)  # fmt: skip
        raise
    finally:
        client.close()


@celery_app.task(name=CHECK_TASK)
def maybe_sleep() -> dict[str, Any]:
    """Beat's periodic check: start a cycle when the window, the GPU and the pending sessions allow."""
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        d = decide(client, settings)
        job = enqueue(client, {"trigger": "scheduler"}, settings) if d.sleep else None
        return {"sleep": d.sleep, "job_id": job, "reasons": d.reasons, "pending_tokens": d.pending_tokens}
    finally:
        client.close()
