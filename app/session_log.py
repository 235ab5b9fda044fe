"""Writes exchange records to the Redis session log off the request path, spooling locally while Redis is away.

Handlers call `submit()` (non-blocking). One background task batches records into pipelined writes; a second
replays the spool once Redis answers again. While the spool holds anything, new records join it too, so that
the stream keeps the order records were made in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from app import metrics
from app.spool import Spool
from sleepd.records import ExchangeRecord
from sleepd.session_store import SessionStore

log = logging.getLogger(__name__)


class SessionLogWriter:
    def __init__(
        self, store: SessionStore, spool: Spool, *, queue_size: int, batch: int, replay_interval_s: float
    ) -> None:
        self.store = store
        self.spool = spool
        self.batch = batch
        self.replay_interval_s = replay_interval_s
        self._queue: asyncio.Queue[ExchangeRecord] = asyncio.Queue(maxsize=queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._overflow: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        metrics.SESSION_SPOOL_PENDING.set(await asyncio.to_thread(self.spool.count))
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="session-log-writer"),
            asyncio.create_task(self._replay_loop(), name="session-log-replay"),
        ]

    def submit(self, record: ExchangeRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            # Redis is slower than traffic: keep the record on disk rather than block the request or drop it.
            task = asyncio.create_task(self._to_spool([record]))
            self._overflow.add(task)
            task.add_done_callback(self._overflow.discard)
        metrics.SESSION_QUEUE_DEPTH.set(self._queue.qsize())

    async def close(self) -> None:
        """Stop the loops, then store (or spool) everything still queued."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._overflow:
            await asyncio.gather(*self._overflow, return_exceptions=True)
        while not self._queue.empty():
            await self._deliver(self._drain(self._queue.get_nowait()))

    def _drain(self, first: ExchangeRecord) -> list[ExchangeRecord]:
        batch = [first]
        while len(batch) < self.batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        metrics.SESSION_QUEUE_DEPTH.set(self._queue.qsize())
        return batch

    async def _write_loop(self) -> None:
        while True:
            batch = self._drain(await self._queue.get())
            await self._deliver(batch)

    async def _deliver(self, batch: list[ExchangeRecord]) -> None:
        if self.spool.pending():
            await self._to_spool(batch)
            return
        start = time.perf_counter()
        try:
            ids = await self.store.append_many(batch)
        except (RedisError, OSError) as exc:
            log.warning("session log: Redis unavailable (%s); spooling %d record(s)", exc, len(batch))
            metrics.REDIS_UP.set(0)
            await self._to_spool(batch)
            return
        metrics.REDIS_UP.set(1)
        metrics.SESSION_WRITE_SECONDS.observe(time.perf_counter() - start)
        stored = sum(1 for i in ids if i)
        metrics.SESSION_RECORDS.labels("redis").inc(stored)
        metrics.SESSION_RECORDS.labels("duplicate").inc(len(ids) - stored)

    async def _to_spool(self, batch: list[ExchangeRecord]) -> None:
        await asyncio.to_thread(self.spool.append, batch)
        metrics.SESSION_RECORDS.labels("spooled").inc(len(batch))
        metrics.SESSION_SPOOL_PENDING.inc(len(batch))

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval_s)
            if not self.spool.pending():
                continue
            try:
                await self.replay_once()
            except (RedisError, OSError) as exc:
                log.debug("session log: spool replay waits for Redis (%s)", exc)

    async def replay_once(self) -> int:
        """Move spooled records into Redis; raises a Redis error if it is still away. Returns records stored."""
        stored = 0
        while self.spool.pending():
            records = await asyncio.to_thread(self.spool.take_batch)
            for i in range(0, len(records), self.batch):
                ids = await self.store.append_many(records[i : i + self.batch])
                stored += sum(1 for x in ids if x)
            await asyncio.to_thread(self.spool.done_batch)
            metrics.SESSION_RECORDS.labels("replayed").inc(len(records))
            metrics.SESSION_SPOOL_PENDING.set(await asyncio.to_thread(self.spool.count))
            log.info("session log: replayed %d spooled record(s) into Redis", len(records))
        metrics.REDIS_UP.set(1)
        return stored
