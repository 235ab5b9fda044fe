"""When to sleep, against real Redis counters: quiet minutes, windows, pending tokens, the GPU check on CPU."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis

from sleepd import keys
from sleepd.config import Settings
from sleepd.records import ExchangeRecord
from sleepd.window import current_traffic, decide, gpu_state, in_windows, traffic_per_minute


def settings(**kw: object) -> Settings:
    return Settings(redis_url="redis://127.0.0.1:6379/15", sleep_quiet_minutes=3, sleep_traffic_threshold=5,
                    sleep_min_pending_tokens=10, **kw)  # type: ignore[arg-type]  # fmt: skip


def log_exchange(client: redis.Redis, tokens: int) -> None:
    rec = ExchangeRecord(session_id="s", endpoint="chat", model="m", prompt_tokens=tokens, completion_tokens=0)
    client.xadd(keys.SESSION_STREAM, {"session_id": "s", "record_id": rec.record_id, "data": rec.model_dump_json()})


def test_quiet_window_with_pending_sessions_means_sleep(local_redis: redis.Redis) -> None:
    now = time.time()
    minute = int(now // 60)
    for m, count in ((minute - 3, 2), (minute - 2, 0), (minute - 1, 5), (minute, 50)):  # the current minute is partial
        local_redis.set(keys.traffic(m), count)
    assert traffic_per_minute(local_redis, 3, now) == [2, 0, 5]
    log_exchange(local_redis, 40)
    d = decide(local_redis, settings(), now)
    assert d.sleep and d.pending_tokens == 40 and d.gpu is not None and d.gpu.detail == "no GPU"
    assert current_traffic(local_redis, now) == 50  # what preemption watches


def test_busy_minute_or_nothing_pending_means_no_sleep(local_redis: redis.Redis) -> None:
    now = time.time()
    d = decide(local_redis, settings(), now)
    assert not d.sleep and any("tokens pending" in r for r in d.reasons)
    log_exchange(local_redis, 40)
    local_redis.set(keys.traffic(int(now // 60) - 2), 6)
    d = decide(local_redis, settings(), now)
    assert not d.sleep and any("traffic above" in r for r in d.reasons)
    # Records already consolidated (before the watermark) are not pending.
    local_redis.delete(keys.traffic(int(now // 60) - 2))
    last = local_redis.xrevrange(keys.SESSION_STREAM, count=1)[0][0]
    local_redis.set(keys.SLEEP_WATERMARK, last)
    assert decide(local_redis, settings(), now).pending_records == 0


def test_windows() -> None:
    at = datetime(2026, 11, 26, 3, 30, tzinfo=UTC)
    assert in_windows("", at)
    assert in_windows("01:00-05:00", at) and not in_windows("05:00-06:00", at)
    assert in_windows("23:00-04:00", at) and not in_windows("23:00-02:00", at)  # wrapping past midnight
    assert in_windows("10:00-11:00, 03:00-03:45", at)


def test_no_gpu_reports_idle_cpu_path() -> None:
    state = gpu_state(10, 4.0)
    assert not state.present and state.idle and state.detail == "no GPU"
