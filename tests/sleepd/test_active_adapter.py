"""The active-adapter pointer in real Redis: one transaction sets it, logs it and notifies subscribers."""

from __future__ import annotations

import asyncio
import json

import redis
import redis.asyncio as aioredis

from sleepd import keys
from sleepd.active_adapter import ActiveAdapter


def test_set_get_history_and_notify(local_redis: redis.Redis) -> None:
    async def go() -> None:
        client = aioredis.from_url("redis://127.0.0.1:6379/15")
        pointer = ActiveAdapter(client)
        assert await pointer.get() == "base"
        pubsub = client.pubsub()
        await pubsub.subscribe(keys.ADAPTER_EVENTS)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        await pointer.set("v0001", reason="test")
        await pointer.set("v0002")
        assert await pointer.get() == "v0002"
        history = await pointer.history()
        assert [(h["version"], h["previous"]) for h in history] == [("v0002", "v0001"), ("v0001", "base")]
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert msg is not None and json.loads(msg["data"])["version"] == "v0001"
        await pubsub.aclose()
        await client.aclose()

    asyncio.run(go())
