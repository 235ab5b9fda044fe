"""Sleep-operation metrics, read from Redis when /metrics is scraped. The worker and the scheduler keep a small
summary current (sleepd.jobs, sleepd.window.publish_decision, sleepd.sleep_state), so a scrape costs two round
trips however many sessions and jobs there are. The API exposes them so one scrape target covers the system."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from prometheus_client import Gauge

from sleepd import keys
from sleepd.config import Settings
from sleepd.jobs import TERMINAL
from sleepd.window import BLOCKED_CODES

log = logging.getLogger(__name__)

CYCLES = Gauge("sleepd_sleep_cycles", "Sleep cycles by state: ended so (all time), or queued/running now.", ["state"])
PHASE = Gauge("sleepd_sleep_phase", "1 for the phase of the cycle running now; no series when none runs.", ["phase"])
PHASE_SECONDS = Gauge("sleepd_sleep_last_phase_seconds", "Phase durations of the latest finished cycle.", ["phase"])
GATE = Gauge(
    "sleepd_sleep_last_gate",
    "Gate values of the latest finished cycle, by metric and the version it built (published, or"
    " 'rejected-on-<parent>' for a candidate the gate refused, 'skipped-on-<parent>' when nothing was learned).",
    ["metric", "version"],
)
GATE_THRESHOLD = Gauge("sleepd_sleep_gate_threshold", "The gate's configured limits.", ["metric"])
GATE_REJECTIONS = Gauge("sleepd_sleep_gate_rejections", "Gate rejections since the watermark last moved.")
LAST_PUBLISHED = Gauge(
    "sleepd_sleep_last_published_timestamp_seconds", "Unix time the latest published cycle finished (0: never)."
)
PENDING_RECORDS = Gauge("sleepd_sleep_pending_records", "Logged exchanges not yet consolidated (scheduler's view).")
PENDING_TOKENS = Gauge("sleepd_sleep_pending_tokens", "Tokens of the exchanges not yet consolidated.")
WINDOW_OPEN = Gauge("sleepd_sleep_window_open", "1 when traffic, window, GPU and pending tokens allow a sleep.")
WINDOW_BLOCKED = Gauge("sleepd_sleep_window_blocked", "1 for each reason the scheduler does not sleep now.", ["reason"])
DECISION_AGE = Gauge("sleepd_sleep_decision_age_seconds", "Age of the scheduler's latest decision (scheduler alive?).")
GPU_IDLE = Gauge("sleepd_gpu_idle", "1 when the GPU is idle enough to train (1 on machines without a GPU).")
LOCK_HELD = Gauge("sleepd_sleep_lock_held", "1 while a worker holds the sleep lock.", ["holder"])
WORKERS = Gauge("sleepd_sleep_workers", "Sleep workers whose heartbeat is less than 90 s old.")
FAILURES = Gauge("sleepd_sleep_consecutive_failures", "Failed cycles in a row (0 after any cycle ends otherwise).")
STOPPED = Gauge("sleepd_sleep_stopped", "1 when the scheduler stopped after SLEEPD_SLEEP_MAX_FAILURES failures.")


def refresh(client: redis.Redis, settings: Settings, now: float | None = None) -> None:
    now = now or time.time()
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.SLEEP_OUTCOMES)
    pipe.hgetall(keys.SLEEP_SUMMARY)
    pipe.get(keys.SLEEP_LOCK)
    pipe.get(keys.SLEEP_REJECTIONS)
    pipe.hgetall(keys.SLEEP_FAILURES)
    pipe.zcount(keys.WORKERS, now - 90, "+inf")
    pipe.get(keys.SLEEP_ACTIVE)
    outcomes, summary, holder, rejections, failures, workers, queued = (_text(r) for r in pipe.execute())
    pipe = client.pipeline(transaction=False)
    for job_id in (summary.get("running"), summary.get("last_finished")):
        pipe.hmget(keys.sleep_job(job_id or "-"), ["phase", "phases", "metrics", "state", "version"])
    running, last = ([_str(v) for v in row] for row in pipe.execute())

    for state in sorted(TERMINAL):
        CYCLES.labels(state).set(float(outcomes.get(state, 0)))
    CYCLES.labels("running").set(int(running[3] == "running"))
    CYCLES.labels("queued").set(int(bool(queued) and running[3] != "running"))
    PHASE.clear()
    if running[3] == "running" and running[0]:
        PHASE.labels(running[0]).set(1)
    if last[1]:
        for phase, seconds in json.loads(last[1]).items():
            PHASE_SECONDS.labels(phase).set(float(seconds))
    GATE.clear()  # one cycle's values: the previous version's series end when a new cycle finishes
    if last[2]:
        for metric, value in json.loads(last[2]).items():
            if isinstance(value, int | float):
                GATE.labels(metric, last[4] or "unknown").set(float(value))
    GATE_THRESHOLD.labels("min_recall_gain").set(settings.gate_min_recall_gain)
    GATE_THRESHOLD.labels("max_anchor_kl").set(settings.gate_max_anchor_kl)
    GATE_THRESHOLD.labels("max_base_kl").set(settings.gate_max_base_kl)
    GATE_REJECTIONS.set(float(rejections or 0))
    LAST_PUBLISHED.set(float(summary.get("last_published_at", 0)))
    if "decided_at" in summary:
        PENDING_RECORDS.set(float(summary["pending_records"]))
        PENDING_TOKENS.set(float(summary["pending_tokens"]))
        WINDOW_OPEN.set(float(summary["window_open"]))
        GPU_IDLE.set(float(summary["gpu_idle"]))
        DECISION_AGE.set(now - float(summary["decided_at"]))
        blocked = set(json.loads(summary.get("blocked", "[]")))
        for code in BLOCKED_CODES:
            WINDOW_BLOCKED.labels(code).set(int(code in blocked))
    LOCK_HELD.clear()
    if holder:
        LOCK_HELD.labels(str(holder).split(":")[0]).set(1)  # the job id, not the per-attempt suffix
    WORKERS.set(float(workers))
    FAILURES.set(float(failures.get("count", 0)))
    STOPPED.set(float(failures.get("stopped", 0)))


def _str(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: Any) -> Any:
    if isinstance(value, dict):
        return {_str(k): _str(v) for k, v in value.items()}
    return _str(value)
