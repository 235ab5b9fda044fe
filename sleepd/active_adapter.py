"""Which adapter version is active, in Redis: one key, a history list and a pub/sub channel. Servers subscribe
to the channel and also poll the key, so a missed message or a restart still converges on the same version.

Every change (an operator's activation or rollback, a sleep's publish) is one compare-and-set, a Lua script:
it moves the pointer only from the version the writer expected, and for a sleep worker only while its
fencing token is still the latest and it still holds the lock. Check and write are one round trip, so a sleep
that finishes after an operator's rollback cannot undo it, and a worker that lost its lock cannot publish.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from sleepd import keys
from sleepd.keys import DEFAULT_TENANT
from sleepd.registry import BASE

# KEYS: active, history, events channel, fence counter, sleep lock.
# ARGV: expected ('' = any), version, reason, time, fence token ('' = none), lock owner, tenant.
# Returns {outcome, version before}: ok | same (already there: a resumed writer) | conflict | fenced.
_CAS = """
local current = redis.call('GET', KEYS[1]) or 'base'
if current == ARGV[2] then return {'same', current} end
if ARGV[1] ~= '' and current ~= ARGV[1] then return {'conflict', current} end
if ARGV[5] ~= '' and (redis.call('GET', KEYS[4]) ~= ARGV[5] or redis.call('GET', KEYS[5]) ~= ARGV[6]) then
  return {'fenced', current}
end
local event = cjson.encode({version = ARGV[2], previous = current, reason = ARGV[3], at = tonumber(ARGV[4]),
                            tenant = ARGV[7]})
redis.call('SET', KEYS[1], ARGV[2])
redis.call('LPUSH', KEYS[2], event)
redis.call('LTRIM', KEYS[2], 0, 999)
redis.call('PUBLISH', KEYS[3], event)
return {'ok', current}
"""


class PointerConflict(Exception):
    """The pointer is not at the version the writer expected (someone else moved it)."""

    def __init__(self, version: str, expected: str, current: str) -> None:
        super().__init__(f"not switching to {version}: the active adapter is {current}, not {expected} as expected")
        self.current = current


class PointerFenced(Exception):
    """A sleep worker whose lock was taken over (its fencing token is stale) tried to move the pointer."""


@dataclass(frozen=True)
class Fence:
    """A sleep worker's proof that it still holds the lock: the token its acquisition got, and its owner id."""

    token: int
    owner: str


class ActiveAdapter:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def get(self, tenant: str = DEFAULT_TENANT) -> str:
        value = await self.redis.get(keys.adapter_active(tenant))
        if value is None:
            return BASE
        return value.decode() if isinstance(value, bytes) else str(value)

    async def set(
        self, version: str, *, expected: str | None, reason: str = "", fence: Fence | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> dict[str, Any]:  # fmt: skip
        """Point at `version` (already verified and published in the registry) and tell every server, only if
        the pointer is at `expected` now (None: whatever it is) and `fence` (if given) is still current.
        Setting the version already active changes nothing and is not an error (a resumed writer)."""
        at = time.time()
        outcome, current = await self.redis.eval(*_cas_args(version, expected, reason, at, fence, tenant))  # type: ignore[misc]
        return _outcome(outcome, current, version, expected, reason, at, fence)

    async def history(self, limit: int = 50, tenant: str = DEFAULT_TENANT) -> list[dict[str, Any]]:
        rows = await self.redis.lrange(keys.adapter_history(tenant), 0, limit - 1)
        return [json.loads(r) for r in rows]


def _cas_args(
    version: str, expected: str | None, reason: str, at: float, fence: Fence | None, tenant: str
) -> list[Any]:
    return [
        _CAS, 5, keys.adapter_active(tenant), keys.adapter_history(tenant), keys.ADAPTER_EVENTS, keys.SLEEP_FENCE,
        keys.SLEEP_LOCK, expected or "", version, reason, repr(at), str(fence.token) if fence else "",
        fence.owner if fence else "", tenant,
    ]  # fmt: skip


def _outcome(
    outcome: Any, current: Any, version: str, expected: str | None, reason: str, at: float, fence: Fence | None
) -> dict[str, Any]:
    outcome, current = _text(outcome), _text(current)
    if outcome == "conflict":
        raise PointerConflict(version, expected or "?", current)
    if outcome == "fenced":
        raise PointerFenced(f"not switching to {version}: the sleep lock was taken over (token {fence})")
    return {"version": version, "previous": current, "reason": reason, "at": at, "changed": outcome == "ok"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# For the processes that use redis-py's sync client (the worker, the CLI): the same key and the same script.
def read_active(client: redis.Redis, tenant: str = DEFAULT_TENANT) -> str:
    value = client.get(keys.adapter_active(tenant))
    return BASE if value is None else _text(value)


def write_active(
    client: redis.Redis, version: str, *, expected: str | None, reason: str, fence: Fence | None = None,
    tenant: str = DEFAULT_TENANT,
) -> dict[str, Any]:  # fmt: skip
    """Point every server at `version` if the pointer is still at `expected` (see `ActiveAdapter.set`)."""
    at = time.time()
    outcome, current = client.eval(*_cas_args(version, expected, reason, at, fence, tenant))  # type: ignore[misc]
    return _outcome(outcome, current, version, expected, reason, at, fence)
