"""The active-adapter pointer in real Redis: one compare-and-set script moves it, logs it and notifies
subscribers; it refuses a writer that expected another version, and a sleep worker whose lock was taken over."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable

import pytest
import redis
import redis.asyncio as aioredis

from sleepd import keys
from sleepd.active_adapter import ActiveAdapter, Fence, PointerConflict, PointerFenced


def run(local_redis: redis.Redis, test: Callable[[ActiveAdapter], Awaitable[None]]) -> None:
    async def go() -> None:
        client = aioredis.from_url(os.environ.get("SLEEPD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
        try:
            await test(ActiveAdapter(client))
        finally:
            await client.aclose()

    asyncio.run(go())


def test_set_get_history_and_notify(local_redis: redis.Redis) -> None:
    async def test(pointer: ActiveAdapter) -> None:
        assert await pointer.get() == "base"
        pubsub = pointer.redis.pubsub()
        await pubsub.subscribe(keys.ADAPTER_EVENTS)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        await pointer.set("v0001", expected="base", reason="test")
        await pointer.set("v0002", expected="v0001")
        assert await pointer.get() == "v0002"
        history = await pointer.history()
        assert [(h["version"], h["previous"]) for h in history] == [("v0002", "v0001"), ("v0001", "base")]
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert msg is not None and json.loads(msg["data"])["version"] == "v0001"
        await pubsub.aclose()

    run(local_redis, test)


def test_compare_and_set_refuses_a_writer_that_expected_another_version(local_redis: redis.Redis) -> None:
    async def test(pointer: ActiveAdapter) -> None:
        await pointer.set("v0002", expected="base")
        await pointer.set("v0001", expected="v0002", reason="rollback")  # an operator rolls back
        # A sleep built on v0002 finishes: it must not undo the rollback.
        with pytest.raises(PointerConflict, match="v0001, not v0002"):
            await pointer.set("v0003", expected="v0002", reason="sleep")
        assert await pointer.get() == "v0001"
        assert [h["version"] for h in await pointer.history()] == ["v0001", "v0002"]
        # Setting what is already active is a no-op, not a conflict: a resumed writer repeats its last step.
        event = await pointer.set("v0001", expected="v0002")
        assert event["changed"] is False and len(await pointer.history()) == 2

    run(local_redis, test)


def test_a_stale_fencing_token_cannot_move_the_pointer(local_redis: redis.Redis) -> None:
    local_redis.set(keys.SLEEP_LOCK, "job-b")  # job-a's lock lapsed; job-b took it over (token 2)
    local_redis.set(keys.SLEEP_FENCE, 2)

    async def test(pointer: ActiveAdapter) -> None:
        with pytest.raises(PointerFenced):
            await pointer.set("v0001", expected="base", fence=Fence(1, "job-a"))
        with pytest.raises(PointerFenced):  # the right token but not the holder
            await pointer.set("v0001", expected="base", fence=Fence(2, "job-a"))
        assert await pointer.get() == "base"
        await pointer.set("v0001", expected="base", fence=Fence(2, "job-b"))
        assert await pointer.get() == "v0001"

    run(local_redis, test)
