"""The session log repository against the machine's real Redis."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from sleepd import keys
from sleepd.records import ExchangeRecord
from sleepd.session_store import SessionStore

URL = "redis://127.0.0.1:6379/15"


def rec(session: str, text: str) -> ExchangeRecord:
    return ExchangeRecord(session_id=session, endpoint="chat", model="m", messages=[{"role": "user", "content": text}])


def test_append_is_exactly_once_and_indexed(local_redis: redis.Redis) -> None:
    async def go() -> None:
        client = aioredis.from_url(URL)
        store = SessionStore(client)
        a, b, c = rec("s1", "a"), rec("s2", "b"), rec("s1", "c")
        ids = await store.append_many([a, b])
        assert all(ids)
        again = await store.append_many([a, c])  # `a` again, as a replay after an unclear failure would
        assert again[0] is None and again[1] is not None
        assert await store.count() == 3
        assert [r.messages[0]["content"] for _, r in await store.session("s1")] == ["a", "c"]  # type: ignore[index]
        assert [r.messages[0]["content"] for _, r in await store.recent(2)] == ["c", "b"]  # type: ignore[index]
        assert [s for s, _ in await store.recent_sessions()] == ["s1", "s2"]
        assert await store.session("nope") == []
        assert 0 < await client.ttl(keys.record_dedupe(a.record_id)) <= store.dedupe_ttl_s, "a's marker, with a TTL"
        await client.aclose()

    asyncio.run(go())
