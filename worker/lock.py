"""One sleep at a time: a Redis lock with a TTL kept alive by a heartbeat, and a fencing token.

The token (INCR on acquisition) lets the holder check, right before it publishes, that nobody took the lock
over after its own TTL lapsed (a paused or partitioned worker): a stale holder must not publish.
"""

from __future__ import annotations

import threading
from types import TracebackType

import redis

from sleepd import keys

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# KEYS: lock, the job's one-cycle-at-a-time slot (keys.SLEEP_ACTIVE), fence. ARGV: owner, ttl ms, job id, slot ttl
# s, token. Extends the lock (and the slot, so a cycle longer than the slot's TTL keeps it). A lock that lapsed
# while nobody acquired it since (the fence still at our token: e.g. Redis was down longer than the TTL, so no
# beat landed) is taken back; one another worker acquired is lost for good.
_EXTEND = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not holder and redis.call('GET', KEYS[3]) == ARGV[5] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  return 0
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
return 1
"""


class LockHeld(Exception):
    pass


class LockLost(Exception):
    pass


class SleepLock:
    def __init__(self, client: redis.Redis, owner: str, ttl_s: int, *, job_id: str = "", slot_ttl_s: int = 0) -> None:
        self.redis = client
        self.owner = owner  # unique per attempt: a redelivered job must not pass for its killed predecessor
        self.job_id = job_id
        self.slot_ttl_s = slot_ttl_s
        self.ttl_ms = ttl_s * 1000
        self.token = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> SleepLock:
        if not self.redis.set(keys.SLEEP_LOCK, self.owner, nx=True, px=self.ttl_ms):
            holder = self.redis.get(keys.SLEEP_LOCK)
            raise LockHeld(f"sleep lock held by {holder.decode() if isinstance(holder, bytes) else holder}")
        self.token = int(self.redis.incr(keys.SLEEP_FENCE))  # type: ignore[arg-type]
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="sleep-lock-heartbeat")
        self._beat.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        if self._beat:
            self._beat.join(timeout=5)
        self.redis.eval(_RELEASE, 1, keys.SLEEP_LOCK, self.owner)

    def check(self) -> None:
        """Raise LockLost unless this holder still owns the lock (or takes back a lapsed one) and no later
        acquisition happened."""
        if not self._extend():
            fence = int(self.redis.get(keys.SLEEP_FENCE) or 0)  # type: ignore[arg-type]
            raise LockLost(f"lock lost by {self.owner} (token {self.token}, now {fence})")

    def _extend(self) -> bool:
        return bool(self.redis.eval(_EXTEND, 3, keys.SLEEP_LOCK, keys.SLEEP_ACTIVE, keys.SLEEP_FENCE, self.owner,
                                    self.ttl_ms, self.job_id, self.slot_ttl_s, self.token))  # fmt: skip

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                self._extend()
            except redis.RedisError:
                pass  # the next beat retries; check() before publishing is what guards correctness
