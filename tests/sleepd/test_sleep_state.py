"""Sleep state in a real Redis: the watermark only moves forward, failures back off then stop the scheduler,
consolidated sessions leave Redis after the retention, /metrics costs O(1) calls, and an evicting Redis is
refused."""

from __future__ import annotations

import json
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from app import sleep_metrics
from sleepd import keys
from sleepd.config import Settings
from sleepd.jobs import JobStore
from sleepd.local_redis import UnsafeRedis, check_eviction_policy, start_redis
from sleepd.sleep_state import (
    advance_watermark,
    clear_failures,
    failures,
    record_failure,
    trim_consolidated,
    watermark,
)
from sleepd.window import decide
from tests.conftest import free_port


def test_the_watermark_only_moves_forward(local_redis: redis.Redis) -> None:
    assert advance_watermark(local_redis, "9-5")
    assert not advance_watermark(local_redis, "9-5")
    assert not advance_watermark(local_redis, "9-4")
    assert not advance_watermark(local_redis, "3-0")
    assert advance_watermark(local_redis, "10-0"), "ids compare as numbers, not strings ('10' < '9')"
    assert watermark(local_redis) == "10-0"


def test_failures_back_off_exponentially_then_stop_the_scheduler(local_redis: redis.Redis) -> None:
    settings = Settings(sleep_failure_backoff_s=60, sleep_failure_backoff_max_s=200, sleep_max_failures=3,
                        sleep_min_pending_tokens=0)  # fmt: skip
    now = time.time()
    assert decide(local_redis, settings, now).sleep
    first = record_failure(local_redis, settings, "RuntimeError", now)
    assert first.backoff_until == pytest.approx(now + 60) and not first.stopped
    d = decide(local_redis, settings, now + 30)
    assert not d.sleep and d.codes == ["backoff"]
    assert decide(local_redis, settings, now + 61).sleep, "the backoff ends"
    assert record_failure(local_redis, settings, "RuntimeError", now).backoff_until == pytest.approx(now + 120)
    third = record_failure(local_redis, settings, "RuntimeError", now)
    assert third.stopped and third.backoff_until == pytest.approx(now + 200), "doubling, capped"
    d = decide(local_redis, settings, now + 10_000)
    assert not d.sleep and d.codes == ["stopped"] and "force=true" in d.reasons[0]
    clear_failures(local_redis)  # any cycle that ends (an operator's forced one included)
    assert failures(local_redis).count == 0 and decide(local_redis, settings, now + 10_000).sleep


def _add(client: redis.Redis, ms: int, session: str) -> str:
    eid = client.xadd(keys.SESSION_STREAM, {"session_id": session, "data": json.dumps({"session_id": session})},
                      id=f"{ms}-0")  # fmt: skip
    client.rpush(keys.session_entries(session), eid)
    client.zadd(keys.SESSION_INDEX, {session: ms / 1000})
    return eid.decode()


def test_consolidated_sessions_leave_redis_after_the_retention(local_redis: redis.Redis, tmp_path: Path) -> None:
    now = time.time()
    day = 86_400_000
    t0 = int(now * 1000) - 10 * day
    old_a = _add(local_redis, t0, "a")  # 10 days old, consolidated
    _add(local_redis, t0 + 1, "b")  # 10 days old, consolidated
    _add(local_redis, t0 + 2 * day, "a")  # 8 days old: the last consolidated record
    _add(local_redis, t0 + 3 * day, "c")  # 7 days old + ... not consolidated (after the watermark)
    recent = _add(local_redis, int(now * 1000) - 1000, "d")  # recent, not consolidated
    advance_watermark(local_redis, f"{t0 + 2 * day}-0")
    settings = Settings(session_retention=timedelta(days=9), session_archive_dir=tmp_path / "archive")

    assert trim_consolidated(local_redis, settings, now) == 2
    left = [eid.decode() for eid, _ in local_redis.xrange(keys.SESSION_STREAM)]
    assert old_a not in left and len(left) == 3 and left[-1] == recent
    assert local_redis.zscore(keys.SESSION_INDEX, "b") is None and not local_redis.exists(keys.session_entries("b"))
    assert local_redis.llen(keys.session_entries("a")) == 1 and local_redis.zscore(keys.SESSION_INDEX, "a")
    (archive,) = (tmp_path / "archive").iterdir()
    assert [json.loads(line)["id"] for line in archive.read_text().splitlines()] == [old_a, f"{t0 + 1}-0"]
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    # With a short retention everything consolidated goes, and nothing after the watermark.
    settings = Settings(session_retention=timedelta(seconds=0))
    assert trim_consolidated(local_redis, settings, now) == 1
    assert not local_redis.exists(keys.session_entries("a")) and local_redis.zscore(keys.SESSION_INDEX, "a") is None
    assert local_redis.xlen(keys.SESSION_STREAM) == 2


def test_a_metrics_scrape_costs_a_constant_number_of_redis_calls(local_redis: redis.Redis) -> None:
    jobs = JobStore(local_redis)
    for i in range(300):
        jobs.create(f"j{i}", {})
        jobs.update(f"j{i}", state="running", phase="seeding")
        jobs.update(f"j{i}", state="published" if i % 3 else "rejected", phases={"seeding": 1.5},
                    metrics={"anchor_kl": 0.05}, version=f"v{i:04d}")  # fmt: skip
    pipe = local_redis.pipeline(transaction=False)
    for _ in range(3000):
        pipe.xadd(keys.SESSION_STREAM, {"session_id": "s", "data": "{}"})
    pipe.execute()

    before = _calls(local_redis)
    sleep_metrics.refresh(local_redis, Settings())
    used = _calls(local_redis) - before - 1  # the INFO that measured
    assert used <= 10, f"{used} Redis commands for one scrape"
    assert sleep_metrics.CYCLES.labels("published")._value.get() == 200
    assert sleep_metrics.CYCLES.labels("rejected")._value.get() == 100
    assert sleep_metrics.LAST_PUBLISHED._value.get() > 0
    # The latest finished cycle's gate values, labelled with the version it built (and only that one).
    gate = {s.labels["version"]: s.value for m in sleep_metrics.GATE.collect() for s in m.samples}
    assert gate == {"v0299": 0.05}


def _calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def test_a_redis_that_may_evict_is_refused_and_the_local_one_never_evicts(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = start_redis(url, tmp_path, appendonly=False, maxmemory="64mb")
    try:
        client = redis.Redis.from_url(url)
        assert client.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert check_eviction_policy(client) == "noeviction"
        client.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(UnsafeRedis, match="allkeys-lru"):
            check_eviction_policy(client)
        client.config_set("maxmemory-policy", "volatile-ttl")
        with pytest.raises(UnsafeRedis, match="volatile-ttl"):
            check_eviction_policy(client)
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_local_redis_with_a_password_refuses_clients_without_it(tmp_path: Path) -> None:
    from sleepd.local_redis import redis_answers, with_password

    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = start_redis(url, tmp_path, appendonly=False, password="pa:ss/word")
    try:
        assert not redis_answers(url)
        assert redis_answers(with_password(url, "pa:ss/word"))
        assert "pa:ss/word" not in " ".join(proc.args), "the password must not be on the command line"  # type: ignore[arg-type]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
