"""One sleep at a time: the lock refuses a second holder, and fencing catches a holder that lost it."""

from __future__ import annotations

import time

import pytest
import redis

from sleepd import keys
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
