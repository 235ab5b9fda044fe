"""The Celery app of sleepd's sleep worker: broker on Redis, one queue, settings for long GPU jobs. Every
setting says why. `sleepd worker` / `sleepd scheduler` start it; the API server only sends messages by task
name (sleepd/sleep_queue.py)."""

from __future__ import annotations

from celery import Celery

from sleepd.config import Settings
from sleepd.sleep_queue import CHECK_TASK, QUEUE, SLEEP_TASK


def create_celery(settings: Settings) -> Celery:
    # No result backend: job state lives in sleepd.jobs, which the API and CLI read; Celery's results were unread.
    app = Celery("sleepd", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        # Acknowledge only when a cycle ends: a worker that dies mid-sleep leaves the message to be redelivered.
        task_acks_late=True,
        # With a prefork pool, requeue the task when its child is killed (SIGKILL, OOM) instead of failing it.
        task_reject_on_worker_lost=True,
        # One long job at a time per worker; the next cycle waits on the queue, not in this worker's buffer.
        worker_prefetch_multiplier=1,
        # Redis redelivers an unacknowledged task after this: keep it above the longest cycle, or a running
        # sleep would be started a second time.
        broker_transport_options={"visibility_timeout": settings.sleep_visibility_timeout_s},
        # Prefork children only: the soft limit raises SoftTimeLimitExceeded in the task, the hard limit (soft +
        # 5 min) kills it. The solo pool that `sleepd worker` runs ignores both, so the cycle enforces the same
        # limits itself (worker/cycle.py: TimedOut at a progress report, and a watchdog thread).
        task_soft_time_limit=settings.sleep_soft_time_limit_s,
        task_time_limit=settings.sleep_soft_time_limit_s + 300,
        # A prefork child is replaced after each cycle, returning torch's memory to the system (the solo pool
        # used on GPUs runs cycles in the worker process itself; `sleepd worker` uses it, see below).
        worker_max_tasks_per_child=1,
        task_default_queue=QUEUE,
        task_routes={SLEEP_TASK: {"queue": QUEUE}, CHECK_TASK: {"queue": QUEUE}},
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Task events, so Flower (`sleepd flower`) sees workers and tasks like in any Celery deployment and
        # exports them to Prometheus (flower_worker_online, flower_events_total, flower_task_runtime_seconds).
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={"maybe-sleep": {"task": CHECK_TASK, "schedule": settings.sleep_check_interval_s}},
    )
    return app


# For `celery -A worker.celery_app ...`; built from the environment, which is all Settings() reads.
celery_app = create_celery(Settings())
