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


def test_tenants_have_separate_logs_and_a_record_older_than_its_sessions_erasure_is_dropped(
    local_redis: redis.Redis,
) -> None:
    from sleepd.erasure import erase_session

    async def go() -> None:
        client = aioredis.from_url(URL)
        store = SessionStore(client)
        spooled = rec("s1", "my PIN is 8812").model_copy(update={"tenant": "acme"})  # held in a spool meanwhile
        acme = rec("s1", "acme's s1").model_copy(update={"tenant": "acme"})
        await store.append_many([rec("s1", "default's s1"), acme])
        assert [r.tenant for _, r in await store.session("s1", tenant="acme")] == ["acme"]
        assert len(await store.session("s1")) == 1
        await asyncio.to_thread(erase_session, local_redis, "acme", "s1")
        assert await store.session("s1", tenant="acme") == [] and len(await store.session("s1")) == 1
        assert await store.append_many([spooled]) == [None], "a record from before the erasure was stored"
        later = rec("s1", "a new exchange in the same session").model_copy(update={"tenant": "acme"})
        assert (await store.append_many([later]))[0] is not None  # the session id may be used again afterwards
        await client.aclose()

    asyncio.run(go())
