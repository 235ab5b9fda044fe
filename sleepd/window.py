"""When and where to sleep: a low-traffic window, an idle GPU, and enough new session tokens.

Traffic is the per-minute count of logged exchanges the server keeps in Redis (sleepd/session_store.py).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from sleepd import keys
from sleepd.config import Settings
from sleepd.keys import DEFAULT_TENANT
from sleepd.sleep_state import failures


@dataclass
class GpuState:
    present: bool
    idle: bool
    detail: str


@dataclass
class Decision:
    sleep: bool
    reasons: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)  # one stable code per reason (metrics label)
    traffic: list[int] = field(default_factory=list)  # whole minutes, oldest first
    pending_records: int = 0
    pending_tokens: int = 0
    in_window: bool = True
    gpu: GpuState | None = None
    tenant: str = DEFAULT_TENANT


def traffic_per_minute(client: redis.Redis, minutes: int, now: float | None = None) -> list[int]:
    """Exchanges in each of the last `minutes` whole minutes (the current, partial minute excluded)."""
    current = int((now or time.time()) // 60)
    values = client.mget([keys.traffic(m) for m in range(current - minutes, current)])
    return [int(v or 0) for v in values]  # type: ignore[union-attr]


def current_traffic(client: redis.Redis, now: float | None = None) -> int:
    """Exchanges so far in this minute and the last one: the preemption signal (reacts within a minute)."""
    current = int((now or time.time()) // 60)
    values = client.mget([keys.traffic(current - 1), keys.traffic(current)])
    return max(int(v or 0) for v in values)  # type: ignore[union-attr]


def in_windows(spec: str, now: datetime) -> bool:
    """'01:00-05:00,22:30-23:59' in UTC; an empty spec means any time. Windows may wrap past midnight."""
    if not spec.strip():
        return True
    minute = now.hour * 60 + now.minute
    for part in spec.split(","):
        start, end = (int(h) * 60 + int(m) for h, m in (t.strip().split(":") for t in part.split("-")))
        if (start <= minute < end) if start <= end else (minute >= start or minute < end):
            return True
    return False


def pending(client: redis.Redis, limit: int = 100_000, tenant: str = DEFAULT_TENANT) -> tuple[int, int]:
    """A tenant's records after its watermark and their tokens (prompt + completion)."""
    start = client.get(keys.sleep_watermark(tenant))
    lo = f"({start.decode() if isinstance(start, bytes) else start}" if start else "-"
    rows: list[Any] = client.xrange(keys.session_stream(tenant), min=lo, count=limit) or []
    tokens = 0
    for _, fields in rows:
        rec = json.loads(fields[b"data"])
        tokens += int(rec.get("prompt_tokens") or 0) + int(rec.get("completion_tokens") or 0)
    return len(rows), tokens


def gpu_state(max_util: int, min_free_gib: float) -> GpuState:
    """NVML view of the GPU this worker owns (first of CUDA_VISIBLE_DEVICES). No GPU: the CPU path runs."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return GpuState(False, True, "no GPU")
    try:
        index = int((os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0])
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        free_gib = pynvml.nvmlDeviceGetMemoryInfo(handle).free / 2**30
        idle = util <= max_util and free_gib >= min_free_gib
        return GpuState(True, idle, f"gpu{index}: {util}% busy, {free_gib:.1f} GiB free")
    finally:
        pynvml.nvmlShutdown()


BLOCKED_CODES = ("traffic", "outside_window", "pending_tokens", "gpu_busy", "backoff", "stopped")


def decide(client: redis.Redis, settings: Settings, now: float | None = None, tenant: str = DEFAULT_TENANT) -> Decision:
    now = now or time.time()
    d = Decision(sleep=True, tenant=tenant)

    def block(code: str, reason: str) -> None:
        d.codes.append(code)
        d.reasons.append(reason)

    d.traffic = traffic_per_minute(client, settings.sleep_quiet_minutes, now)
    if any(t > settings.sleep_traffic_threshold for t in d.traffic):
        block("traffic", f"traffic above {settings.sleep_traffic_threshold}/min in the last "
                         f"{settings.sleep_quiet_minutes} min")  # fmt: skip
    d.in_window = in_windows(settings.sleep_windows, datetime.fromtimestamp(now, UTC))
    if not d.in_window:
        block("outside_window", f"outside the sleep windows {settings.sleep_windows!r}")
    d.pending_records, d.pending_tokens = pending(client, tenant=tenant)
    if d.pending_tokens < settings.sleep_min_pending_tokens:
        block("pending_tokens", f"{d.pending_tokens} session tokens pending (< {settings.sleep_min_pending_tokens})")
    d.gpu = gpu_state(settings.gpu_max_utilization, settings.gpu_min_free_gib)
    if not d.gpu.idle:
        block("gpu_busy", f"GPU busy ({d.gpu.detail})")
    f = failures(client)
    if (why := f.reason(now)) is not None:
        block("stopped" if f.stopped else "backoff", why)
    d.sleep = not d.reasons
    return d


def decide_any(client: redis.Redis, settings: Settings, now: float | None = None) -> Decision:
    """The scheduler's decision over every tenant: the one with the most pending session tokens that may sleep
    now, else the most-pending one's decision (with why not)."""
    from sleepd.tenants import tenants

    decisions = [decide(client, settings, now, t) for t in tenants(client)]
    ready = [d for d in decisions if d.sleep]
    return max(ready or decisions, key=lambda d: d.pending_tokens)


def publish_decision(client: redis.Redis, d: Decision, now: float | None = None) -> None:
    """Keep the scheduler's latest decision where /metrics reads it (one HSET; the scan stays here)."""
    client.hset(keys.SLEEP_SUMMARY, mapping={
        "decided_at": now or time.time(), "pending_records": d.pending_records, "pending_tokens": d.pending_tokens,
        "window_open": int(d.sleep), "blocked": json.dumps(d.codes), "gpu_idle": int(d.gpu.idle if d.gpu else 1),
    })  # fmt: skip
