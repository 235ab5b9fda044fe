"""Fault test: Redis goes away under concurrent chat load and comes back; the API keeps answering and every
exchange ends up in the session stream exactly once (spooled to disk meanwhile, replayed after)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
from openai import AsyncOpenAI

from sleepd import keys
from tests.conftest import RedisServer, Server


async def _chat_load(
    server: Server, prefix: str, phase: str, workers: int, per_worker: int, progress: list[str] | None = None
) -> list[str]:
    async with AsyncOpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=60) as client:

        async def one(w: int) -> list[str]:
            sent = []
            for i in range(per_worker):
                session = f"{prefix}-{phase}-{w}-{i}"
                stream = i % 2 == 0
                kwargs = dict(
                    model="sleepd", messages=[{"role": "user", "content": f"{phase} {w} {i}"}], max_tokens=4,
                    extra_headers={"X-Session-Id": session},
                )  # fmt: skip
                if stream:
                    async for _ in await client.chat.completions.create(stream=True, **kwargs):  # type: ignore[call-overload]
                        pass
                else:
                    await client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
                sent.append(session)
                if progress is not None:
                    progress.append(session)
            return sent

        results = await asyncio.gather(*(one(w) for w in range(workers)))
    return [s for batch in results for s in batch]


def _stream_sessions(redis_server: RedisServer, prefix: str) -> list[str]:
    client = redis_server.client()
    try:
        out = []
        for _, fields in client.xrange(keys.SESSION_STREAM):
            sid = fields[b"session_id"].decode()
            if sid.startswith(prefix):
                out.append(sid)
                assert json.loads(fields[b"data"])["session_id"] == sid
        return out
    finally:
        client.close()


def test_no_exchange_lost_or_doubled_when_redis_restarts(server: Server, redis_server: RedisServer) -> None:
    prefix = f"outage-{uuid.uuid4().hex[:8]}"
    spool = server.data_dir / "spool"

    async def scenario() -> list[str]:
        # One steady load; Redis is stopped and started again while it runs, so batches are in flight (some
        # written, some not, some unclear) at the moment the connection breaks: the duplicate path is exercised.
        progress: list[str] = []
        load = asyncio.create_task(_chat_load(server, prefix, "steady", workers=4, per_worker=30, progress=progress))
        while len(progress) < 12:  # noqa: ASYNC110 - polling the load's progress is the point
            await asyncio.sleep(0.05)
        await asyncio.to_thread(redis_server.stop)
        at_stop = len(progress)
        while len(progress) < at_stop + 16:
            assert not load.done(), "the load ended before enough requests ran with Redis down"
            await asyncio.sleep(0.05)
        assert any(p.stat().st_size > 0 for p in spool.glob("*.jsonl")), "nothing was spooled while Redis was down"
        await asyncio.to_thread(redis_server.start)
        return await load

    try:
        sent = asyncio.run(scenario())
    finally:
        if redis_server.proc is None or redis_server.proc.poll() is not None:
            redis_server.start()

    deadline = time.monotonic() + 30
    logged: list[str] = []
    while time.monotonic() < deadline:
        logged = _stream_sessions(redis_server, prefix)
        if len(logged) >= len(sent):
            break
        time.sleep(0.2)
    time.sleep(0.5)  # a late duplicate would show up here
    logged = _stream_sessions(redis_server, prefix)
    assert sorted(logged) == sorted(sent), "each exchange must be in the stream exactly once"
    metrics = httpx.get(server.base_url + "/metrics").text
    assert "sleepd_session_log_spool_pending 0.0" in metrics
