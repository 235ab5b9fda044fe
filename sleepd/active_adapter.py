"""Which adapter version is active, in Redis: one key, a history list and a pub/sub channel, changed together
in one MULTI/EXEC transaction. Servers subscribe to the channel and also poll the key, so a missed message or a
restart still converges on the same version."""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from sleepd import keys
from sleepd.registry import BASE


class ActiveAdapter:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def get(self) -> str:
        value = await self.redis.get(keys.ADAPTER_ACTIVE)
        if value is None:
            return BASE
        return value.decode() if isinstance(value, bytes) else str(value)

    async def set(self, version: str, reason: str = "") -> dict[str, Any]:
        """Point at `version` (already verified and published in the registry) and tell every server."""
        previous = await self.get()
        event = {"version": version, "previous": previous, "reason": reason, "at": time.time()}
        payload = json.dumps(event)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.ADAPTER_ACTIVE, version)
            pipe.lpush(keys.ADAPTER_HISTORY, payload)
            pipe.ltrim(keys.ADAPTER_HISTORY, 0, 999)
            pipe.publish(keys.ADAPTER_EVENTS, payload)
            await pipe.execute()
        return event

    async def history(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.redis.lrange(keys.ADAPTER_HISTORY, 0, limit - 1)
        return [json.loads(r) for r in rows]


async def read_active(url: str) -> str:
    """The active version, for processes that hold no Redis client of their own (CLI, worker)."""
    client = aioredis.from_url(url)
    try:
        return await ActiveAdapter(client).get()
    finally:
        await client.aclose()


async def write_active(url: str, version: str, reason: str) -> None:
    """Point every server at `version` (a no-op if it is already active: safe to repeat after a crash)."""
    client = aioredis.from_url(url)
    try:
        pointer = ActiveAdapter(client)
        if await pointer.get() != version:
            await pointer.set(version, reason=reason)
    finally:
        await client.aclose()
