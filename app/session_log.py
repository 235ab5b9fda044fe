"""Writes exchange records to the Redis session log off the request path, spooling locally while Redis is away.

Handlers call `submit()` (non-blocking). One background task batches records into pipelined writes; a second
replays the spool once Redis answers again. While the spool holds anything, new records join it too, so that
the stream keeps the order records were made in.

No input and no fault stops the log: records are made encodable when built (sleepd.records), a batch that
fails for any reason goes to the spool, a batch the spool cannot take (disk full) is held in memory and
retried, and both loops are supervised (restarted, counted in `sleepd_session_log_restarts_total`). `close()`
lets the writer finish what is queued (bounded by `drain_timeout_s`), then spools whatever is left, the batch
in flight included: a record both stored and spooled is stored once (the store's per-record marker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from app import metrics
from app.spool import Spool
from sleepd.records import ExchangeRecord
from sleepd.session_store import SessionStore

log = logging.getLogger(__name__)


class SessionLogWriter:
    def __init__(
        self,
        store: SessionStore,
        spool: Spool,
        *,
        queue_size: int,
        batch: int,
        replay_interval_s: float,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.spool = spool
        self.batch = batch
        self.replay_interval_s = replay_interval_s
        self.drain_timeout_s = drain_timeout_s
        self._queue: asyncio.Queue[ExchangeRecord] = asyncio.Queue(maxsize=queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._overflow: set[asyncio.Task[None]] = set()
        self._held: list[ExchangeRecord] = []  # records neither Redis nor the spool could take yet
        self._inflight: list[ExchangeRecord] = []

    async def start(self) -> None:
        self.spool.acquire()
        metrics.SESSION_SPOOL_PENDING.set(await asyncio.to_thread(self.spool.count))
        self._tasks = [
            asyncio.create_task(self._supervised("writer", self._write_loop), name="session-log-writer"),
            asyncio.create_task(self._supervised("replay", self._replay_loop), name="session-log-replay"),
        ]

    def full(self) -> bool:
        """True while records can reach neither Redis nor the spool within its cap: new exchanges are refused
        (503) rather than accepted and lost."""
        return self.spool.full() or len(self._held) >= self._queue.maxsize

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
        """Store (or spool) everything submitted, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self.drain_timeout_s)
        for t in self._tasks:
            t.cancel()
        # Bounded: a task stuck in a Redis call that does not honour cancellation must not hang shutdown. Its
        # batch is spooled below (`_inflight`) or stays in the replay file; the store's markers drop repeats.
        await asyncio.wait(self._tasks, timeout=5)
        if self._overflow:
            await asyncio.wait(list(self._overflow), timeout=self.drain_timeout_s)
        leftover = self._inflight + self._held
        while not self._queue.empty():
            leftover.append(self._queue.get_nowait())
        if leftover:
            log.info("session log: spooling %d record(s) at shutdown", len(leftover))
            await asyncio.to_thread(self.spool.append, leftover)
        self.spool.release()

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("session log: %s loop failed; restarting it", name)
                metrics.SESSION_LOG_RESTARTS.labels(name).inc()
                await asyncio.sleep(0.5)

    def _drain(self, first: ExchangeRecord) -> list[ExchangeRecord]:
        batch = [first]
        while len(batch) < self.batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        metrics.SESSION_QUEUE_DEPTH.set(self._queue.qsize())
        return batch

    async def _write_loop(self) -> None:
        while True:
            batch = self._drain(await self._queue.get())
            self._inflight = batch
            try:
                await self._deliver(batch)
            finally:
                self._inflight = []
                for _ in batch:
                    self._queue.task_done()

    async def _deliver(self, batch: list[ExchangeRecord]) -> None:
        if self._held:  # older than `batch`: they go first, to keep the order
            batch, self._held = self._held + batch, []
            await self._to_spool(batch)
            return
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
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session log: storing a batch failed; spooling %d record(s)", len(batch))
            await self._to_spool(batch)
            return
        metrics.REDIS_UP.set(1)
        metrics.SESSION_WRITE_SECONDS.observe(time.perf_counter() - start)
        stored = sum(1 for i in ids if i)
        metrics.SESSION_RECORDS.labels("redis").inc(stored)
        metrics.SESSION_RECORDS.labels("duplicate").inc(len(ids) - stored)

    async def _to_spool(self, batch: list[ExchangeRecord]) -> None:
        try:
            await asyncio.to_thread(self.spool.append, batch)
        except OSError as exc:
            # Disk full or unwritable: keep the records in memory and try again from the replay loop.
            log.error("session log: spool write failed (%s); holding %d record(s) in memory", exc, len(batch))
            self._held.extend(batch)
            metrics.SESSION_RECORDS.labels("held").inc(len(batch))
            return
        metrics.SESSION_RECORDS.labels("spooled").inc(len(batch))
        metrics.SESSION_SPOOL_PENDING.inc(len(batch))

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval_s)
            if self._held:
                held, self._held = self._held, []
                await self._to_spool(held)
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
            batches = self.spool.replay_batches(self.batch)
            sent = 0
            skipped = self.spool.skipped
            while (records := await asyncio.to_thread(next, batches, None)) is not None:
                ids = await self.store.append_many(records)
                stored += sum(1 for x in ids if x)
                sent += len(records)
            await asyncio.to_thread(self.spool.done_batch)
            metrics.SESSION_RECORDS.labels("replayed").inc(sent)
            metrics.SESSION_RECORDS.labels("unreadable").inc(self.spool.skipped - skipped)
            metrics.SESSION_SPOOL_PENDING.set(await asyncio.to_thread(self.spool.count))
            log.info("session log: replayed %d spooled record(s) into Redis", sent)
        metrics.REDIS_UP.set(1)
        return stored
