"""Starting a sleep cycle, shared by the API server, the scheduler and the CLI: one cycle queued or running at a
time, and the Celery message sent by task name (the server never imports worker/ nor torch)."""

from __future__ import annotations

import json
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
ERASE_TASK = "sleepd.erase"


def new_job_id() -> str:
    return f"sleep-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


@cache
def _producer(broker_url: str) -> Celery:
    # Only sends messages: no result backend, no task modules.
    return Celery("sleepd", broker=broker_url)


def enqueue(client: redis.Redis, options: dict[str, Any], settings: Settings, task: str = SLEEP_TASK) -> str | None:
    """Start a cycle (or an erasure: `task`) unless one is queued or running (SET NX: of two triggers at once,
    one wins). Returns the job id, or None if another job holds the slot."""
    job_id = new_job_id() if task == SLEEP_TASK else new_job_id().replace("sleep-", "erase-", 1)
    if not client.set(keys.SLEEP_ACTIVE, job_id, nx=True, ex=settings.sleep_visibility_timeout_s):
        return None
    JobStore(client).create(job_id, options)
    _producer(settings.redis_url).send_task(task, args=[job_id, options], task_id=job_id, queue=QUEUE)
    return job_id


def enqueue_erasure(client: redis.Redis, tenant: str, settings: Settings, everything: bool = False) -> str | None:
    """Start the tenant's erase job now, or leave it pending (the scheduler and the end of the running job
    start it): an erasure request is never dropped because a sleep is running."""
    options = {"tenant": tenant, "all": everything, "trigger": "erasure"}
    client.sadd(keys.ERASURES_PENDING, json.dumps({"tenant": tenant, "all": everything}))
    job_id = enqueue(client, options, settings, ERASE_TASK)
    if job_id is not None:
        client.srem(keys.ERASURES_PENDING, json.dumps({"tenant": tenant, "all": everything}))
    return job_id


def start_pending_erasure(client: redis.Redis, settings: Settings) -> str | None:
    """Start one pending erasure if the slot is free (erasures go before sleeps)."""
    for raw in client.smembers(keys.ERASURES_PENDING):  # type: ignore[union-attr]
        spec = json.loads(raw)
        job_id = enqueue(client, {**spec, "trigger": "erasure"}, settings, ERASE_TASK)
        if job_id is None:
            return None
        client.srem(keys.ERASURES_PENDING, raw)
        return job_id
    return None
