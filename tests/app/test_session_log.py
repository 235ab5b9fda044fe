"""The session log writer against a real Redis: no input and no fault stops it, and shutdown loses nothing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import redis
import redis.asyncio as aioredis

from app.session_log import SessionLogWriter
from app.spool import Spool
from sleepd import keys
from sleepd.records import ExchangeRecord
from sleepd.session_store import SessionStore

URL = os.environ.get("SLEEPD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def rec(session: str, name: str | None = None) -> ExchangeRecord:
    msg = {"role": "user", "content": "hello"} | ({"name": name} if name else {})
    return ExchangeRecord(session_id=session, endpoint="chat", model="m", messages=[msg])


def stream_sessions(sync: redis.Redis) -> list[str]:
    return [f[b"session_id"].decode() for _, f in sync.xrange(keys.SESSION_STREAM)]


async def _run(tmp_path: Path, store_cls: type[SessionStore], body: object, spool: Spool | None = None) -> None:
    client = aioredis.from_url(URL)
    writer = SessionLogWriter(
        store_cls(client), spool or Spool(tmp_path / "sessions.jsonl"), queue_size=100, batch=8, replay_interval_s=0.05
    )
    await writer.start()
    try:
        await body(writer)  # type: ignore[operator]
    finally:
        await writer.close()
        await client.aclose()


async def _until(cond: object, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_lone_surrogate_does_not_stop_the_log(local_redis: redis.Redis, tmp_path: Path) -> None:
    async def body(writer: SessionLogWriter) -> None:
        writer.submit(rec("hostile", name="\udfff"))
        for i in range(5):
            writer.submit(rec(f"after-{i}"))
        await _until(lambda: len(stream_sessions(local_redis)) == 6)

    asyncio.run(_run(tmp_path, SessionStore, body))
    assert stream_sessions(local_redis) == ["hostile"] + [f"after-{i}" for i in range(5)]


class _FailsOnce(SessionStore):
    """A real store whose first write raises an unexpected (non-Redis) error."""

    failed = False

    async def append_many(self, records: Sequence[ExchangeRecord]) -> list[str | None]:
        if not _FailsOnce.failed:
            _FailsOnce.failed = True
            raise RuntimeError("unexpected")
        return await super().append_many(records)


def test_an_unexpected_write_error_spools_the_batch_and_goes_on(local_redis: redis.Redis, tmp_path: Path) -> None:
    async def body(writer: SessionLogWriter) -> None:
        writer.submit(rec("first"))
        await _until(lambda: _FailsOnce.failed)
        writer.submit(rec("second"))
        await _until(lambda: len(stream_sessions(local_redis)) == 2 and not writer.spool.pending())

    asyncio.run(_run(tmp_path, _FailsOnce, body))
    assert stream_sessions(local_redis) == ["first", "second"]


class _DiskFullOnce(Spool):
    calls = 0

    def append(self, records: object) -> int:
        _DiskFullOnce.calls += 1
        if _DiskFullOnce.calls == 1:
            raise OSError(28, "No space left on device")
        return super().append(records)  # type: ignore[arg-type]


def test_records_the_spool_cannot_take_are_held_and_retried(local_redis: redis.Redis, tmp_path: Path) -> None:
    async def body(writer: SessionLogWriter) -> None:
        await writer._to_spool([rec("held")])  # the spool's disk is full once
        writer.submit(rec("next"))
        await _until(lambda: len(stream_sessions(local_redis)) == 2)

    asyncio.run(_run(tmp_path, SessionStore, body, spool=_DiskFullOnce(tmp_path / "sessions.jsonl")))
    assert stream_sessions(local_redis) == ["held", "next"]


def test_close_stores_everything_submitted(local_redis: redis.Redis, tmp_path: Path) -> None:
    async def body(writer: SessionLogWriter) -> None:
        for i in range(300):
            writer.submit(rec(f"s{i}"))  # 100 queued, the rest overflow to the spool

    async def replay(writer: SessionLogWriter) -> None:
        await writer.replay_once()  # what the next start does with what shutdown spooled

    asyncio.run(_run(tmp_path, SessionStore, body))
    asyncio.run(_run(tmp_path, SessionStore, replay))
    assert sorted(stream_sessions(local_redis)) == sorted(f"s{i}" for i in range(300)), "each exactly once"
