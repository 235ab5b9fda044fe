"""Sleep-operation metrics, read from Redis when /metrics is scraped (the worker writes jobs and counters there;
the API exposes them so one scrape target covers the whole system)."""

from __future__ import annotations

from collections import Counter as Tally

import redis
from prometheus_client import Gauge

from sleepd import keys
from sleepd.config import Settings
from worker.jobs import JobStore
from worker.window import decide

CYCLES = Gauge("sleepd_sleep_cycles", "Sleep cycles among the last 1000, by outcome (state).", ["state"])
PHASE_SECONDS = Gauge("sleepd_sleep_last_phase_seconds", "Phase durations of the latest finished cycle.", ["phase"])
GATE = Gauge("sleepd_sleep_last_gate", "Gate values of the latest finished cycle.", ["metric"])
PENDING_RECORDS = Gauge("sleepd_sleep_pending_records", "Logged exchanges not yet consolidated.")
PENDING_TOKENS = Gauge("sleepd_sleep_pending_tokens", "Tokens of the exchanges not yet consolidated.")
WINDOW_OPEN = Gauge("sleepd_sleep_window_open", "1 when traffic, window, GPU and pending tokens allow a sleep.")
GPU_IDLE = Gauge("sleepd_gpu_idle", "1 when the GPU is idle enough to train (1 on machines without a GPU).")
LOCK_HELD = Gauge("sleepd_sleep_lock_held", "1 while a worker holds the sleep lock.", ["holder"])


def refresh(client: redis.Redis, settings: Settings) -> None:
    jobs = JobStore(client).recent(1000)
    tally = Tally(str(j.get("state")) for j in jobs)
    for state in ("queued", "running", "preempted", "published", "rejected", "skipped", "failed"):
        CYCLES.labels(state).set(tally.get(state, 0))
    done = next((j for j in jobs if j.get("state") in ("published", "rejected")), None)
    if done:
        for phase, seconds in (done.get("phases") or {}).items():
            PHASE_SECONDS.labels(phase).set(float(seconds))
        for metric, value in (done.get("metrics") or {}).items():
            if isinstance(value, int | float):
                GATE.labels(metric).set(float(value))
    d = decide(client, settings)
    PENDING_RECORDS.set(d.pending_records)
    PENDING_TOKENS.set(d.pending_tokens)
    WINDOW_OPEN.set(int(d.sleep))
    GPU_IDLE.set(int(d.gpu.idle) if d.gpu else 1)
    holder = client.get(keys.SLEEP_LOCK)
    LOCK_HELD.clear()
    if holder:
        LOCK_HELD.labels(holder.decode() if isinstance(holder, bytes) else str(holder)).set(1)
