"""The session log in Redis: one repository class for writing and reading exchange records.

Layout (see sleepd/keys.py): every record is an entry of one Stream; a sorted set indexes sessions by
their latest activity; a list per session holds its entry ids. A Lua script appends a record and its
indexes atomically, guarded by a per-record marker, so that writing the same record twice (spool
replay after an unclear failure) stores it once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from sleepd import keys
from sleepd.keys import DEFAULT_TENANT
from sleepd.records import ExchangeRecord

# KEYS: the tenant's stream, index, session entries list; the dedupe marker; the tenants set; the tenant's erased
# sessions. ARGV: dedupe ttl, created_at, session id, record id, record json, tenant.
# A record made before its session was erased (replayed from a server's spool after the erasure) is dropped.
_APPEND_ONCE = """
local erased = redis.call('HGET', KEYS[6], ARGV[3])
if erased and tonumber(ARGV[2]) <= tonumber(erased) then return false end
if redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[1]) then
  local id = redis.call('XADD', KEYS[1], '*', 'session_id', ARGV[3], 'record_id', ARGV[4], 'data', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('RPUSH', KEYS[3], id)
  redis.call('SADD', KEYS[5], ARGV[6])
  return id
end
return false
"""


class SessionStore:
    def __init__(self, redis: aioredis.Redis, dedupe_ttl_s: int = 7 * 24 * 3600) -> None:
        self.redis = redis
        self.dedupe_ttl_s = dedupe_ttl_s
        self._append = redis.register_script(_APPEND_ONCE)

    async def append_many(self, records: Sequence[ExchangeRecord]) -> list[str | None]:
        """Append records in one round trip. Returns each stream id, or None where it was already stored."""
        pipe = self.redis.pipeline(transaction=False)
        for rec in records:
            # AsyncScript.__call__ is a coroutine even on a pipeline: awaiting it queues the EVALSHA.
            await self._append(
                keys=[
                    keys.session_stream(rec.tenant),
                    keys.session_index(rec.tenant),
                    keys.session_entries(rec.session_id, rec.tenant),
                    keys.record_dedupe(rec.record_id),
                    keys.TENANTS,
                    keys.erased_sessions(rec.tenant),
                ],
                args=[
                    self.dedupe_ttl_s,
                    rec.created_at,
                    rec.session_id,
                    rec.record_id,
                    rec.model_dump_json(),
                    rec.tenant,
                ],
                client=pipe,
            )
        # Traffic per minute for the sleep scheduler, counted here so the request path does no extra Redis work.
        minute = int(time.time() // 60)
        pipe.incrby(keys.traffic(minute), len(records))
        pipe.expire(keys.traffic(minute), keys.TRAFFIC_TTL_S)
        results = (await pipe.execute())[: len(records)]
        return [_as_str(r) if r else None for r in results]

    async def recent(self, limit: int = 50, tenant: str = DEFAULT_TENANT) -> list[tuple[str, ExchangeRecord]]:
        """The tenant's latest exchanges across its sessions, newest first."""
        entries: list[Any] = await self.redis.xrevrange(keys.session_stream(tenant), count=limit) or []
        return [(_as_str(eid), _decode(fields)) for eid, fields in entries]

    async def recent_sessions(self, limit: int = 50, tenant: str = DEFAULT_TENANT) -> list[tuple[str, float]]:
        """Session ids by latest activity, newest first, with that time."""
        rows: list[Any] = await self.redis.zrevrange(keys.session_index(tenant), 0, limit - 1, withscores=True)
        return [(_as_str(sid), float(score)) for sid, score in rows]

    async def session(
        self, session_id: str, limit: int | None = None, tenant: str = DEFAULT_TENANT
    ) -> list[tuple[str, ExchangeRecord]]:
        """All exchanges of one session in arrival order (the last `limit` if given)."""
        start = -limit if limit else 0
        ids = await self.redis.lrange(keys.session_entries(session_id, tenant), start, -1)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for eid in ids:
            pipe.xrange(keys.session_stream(tenant), min=eid, max=eid, count=1)
        out: list[tuple[str, ExchangeRecord]] = []
        for rows in await pipe.execute():
            for eid, fields in rows:
                out.append((_as_str(eid), _decode(fields)))
        return out

    async def count(self, tenant: str = DEFAULT_TENANT) -> int:
        return int(await self.redis.xlen(keys.session_stream(tenant)))


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(fields: Any) -> ExchangeRecord:
    data = fields.get(b"data", fields.get("data"))
    assert data is not None, "stream entry without a data field"
    return ExchangeRecord.model_validate_json(data)
