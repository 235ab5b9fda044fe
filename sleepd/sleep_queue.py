"""Starting a sleep cycle, shared by the API server, the scheduler and the CLI: one cycle queued or running at a
time, and the Celery message sent by task name (the server never imports worker/ nor torch)."""

from __future__ import annotations

import time
import uuid
from functools import cache
from typing import Any

import redis
from celery import Celery

from sleepd import keys
from sleepd.config import Settings
from sleepd.jobs import JobStore

QUEUE = "sleep"
SLEEP_TASK = "sleepd.sleep_cycle"
CHECK_TASK = "sleepd.maybe_sleep"


def new_job_id() -> str:
    return f"sleep-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


@cache
def _producer(broker_url: str) -> Celery:
    # Only sends messages: no result backend, no task modules.
    return Celery("sleepd", broker=broker_url)


def enqueue(client: redis.Redis, options: dict[str, Any], settings: Settings) -> str | None:
    """Start a cycle unless one is queued or running (SET NX: of two triggers at once, one wins). Returns the
    job id, or None if another cycle holds the slot."""
    job_id = new_job_id()
    if not client.set(keys.SLEEP_ACTIVE, job_id, nx=True, ex=settings.sleep_visibility_timeout_s):
        return None
    JobStore(client).create(job_id, options)
    _producer(settings.redis_url).send_task(SLEEP_TASK, args=[job_id, options], task_id=job_id, queue=QUEUE)
    return job_id
