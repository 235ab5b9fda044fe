"""One sleep at a time: the lock refuses a second holder, and fencing catches a holder that lost it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from sleepd import keys
from sleepd.config import Settings
from sleepd.jobs import JobStore
from worker.cycle import run_cycle
from worker.lock import LockHeld, LockLost, SleepLock


def test_second_holder_is_refused_and_release_frees(local_redis: redis.Redis) -> None:
    with SleepLock(local_redis, "a", ttl_s=5) as a:
        a.check()
        with pytest.raises(LockHeld, match="held by a"):
            SleepLock(local_redis, "b", ttl_s=5).__enter__()
    with SleepLock(local_redis, "b", ttl_s=5) as b:
        assert b.token == a.token + 1


def test_heartbeat_keeps_the_lock_and_fencing_detects_takeover(local_redis: redis.Redis) -> None:
    with SleepLock(local_redis, "a", ttl_s=1) as a:
        time.sleep(1.6)  # longer than the TTL: only the heartbeat keeps it
        a.check()
        # Simulate the lock lapsing and another worker taking it over.
        local_redis.set(keys.SLEEP_LOCK, "b")
        local_redis.incr(keys.SLEEP_FENCE)
        with pytest.raises(LockLost):
            a.check()
    assert local_redis.get(keys.SLEEP_LOCK) == b"b", "a stale holder must not release someone else's lock"


def test_a_lapsed_lock_nobody_took_is_taken_back_one_taken_is_lost(local_redis: redis.Redis) -> None:
    with SleepLock(local_redis, "a", ttl_s=5) as a:
        local_redis.delete(keys.SLEEP_LOCK)  # lapsed: Redis was away longer than the TTL, no beat landed
        a.check()
        assert local_redis.get(keys.SLEEP_LOCK) == b"a" and local_redis.pttl(keys.SLEEP_LOCK) > 0
        local_redis.delete(keys.SLEEP_LOCK)
        with SleepLock(local_redis, "b", ttl_s=5):  # ... and this time another worker took it meanwhile
            with pytest.raises(LockLost):
                a.check()
            assert local_redis.get(keys.SLEEP_LOCK) == b"b"


def test_the_heartbeat_keeps_the_cycle_slot_alive(local_redis: redis.Redis) -> None:
    local_redis.set(keys.SLEEP_ACTIVE, "job-1", ex=1)
    with SleepLock(local_redis, "job-1:abcd", ttl_s=1, job_id="job-1", slot_ttl_s=60):
        time.sleep(1.6)  # past the slot's own TTL
        assert local_redis.get(keys.SLEEP_ACTIVE) == b"job-1" and local_redis.ttl(keys.SLEEP_ACTIVE) > 30


def test_waiting_for_a_held_lock_is_not_an_attempt(local_redis: redis.Redis, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/15", sleep_max_attempts=2)
    JobStore(local_redis).create("job-1", {})
    local_redis.set(keys.SLEEP_LOCK, "job-0:dead")  # a killed predecessor's lock, not lapsed yet
    for _ in range(4):
        with pytest.raises(LockHeld):
            run_cycle("job-1", {}, settings, local_redis)
    job = JobStore(local_redis).get("job-1")
    assert job is not None and job["attempts"] == 0 and job["state"] == "queued"
