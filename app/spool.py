"""A local, fsync'd JSONL spool for exchange records that could not reach Redis.

Appends go to `sessions.jsonl`. Replay first renames it to `sessions.replaying.jsonl` (so appends can go on
into a fresh file), streams that file's records in batches, and deletes it only once all are stored. A crash in
between leaves the file for the next replay; the store's per-record marker makes the resend store each record
once.

Damage is contained to the line it hits: a write torn by a crash is closed with a newline before the next
append (so the next record starts a line of its own), and replay skips and counts lines it cannot parse
rather than stopping. One process owns a spool (`acquire()` takes an exclusive lock on the folder): two
servers sharing a data dir would replay and delete each other's files.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from sleepd.durable import fsync_path, private
from sleepd.records import ExchangeRecord

log = logging.getLogger(__name__)


class SpoolInUse(RuntimeError):
    """Another process holds this spool's lock."""


class Spool:
    def __init__(self, path: Path, max_bytes: int = 0) -> None:
        self.path = path
        self.replaying = path.with_name(path.stem + ".replaying.jsonl")
        self.max_bytes = max_bytes  # 0: no cap
        self.skipped = 0  # unreadable lines skipped by replay, since start
        self._lock = threading.Lock()
        self._owner: IO[bytes] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)

    def acquire(self) -> None:
        """Take the spool for this process; raises SpoolInUse if another process has it."""
        f = open(self.path.parent / ".spool.lock", "ab")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise SpoolInUse(
                f"another sleepd server spools into {self.path.parent}; give each server its own SLEEPD_DATA_DIR"
            ) from None
        self._owner = f

    def release(self) -> None:
        if self._owner is not None:
            self._owner.close()  # closing the descriptor drops the flock
            self._owner = None

    def pending(self) -> bool:
        return _size(self.path) > 0 or _size(self.replaying) > 0

    def size(self) -> int:
        return _size(self.path) + _size(self.replaying)

    def full(self) -> bool:
        return self.max_bytes > 0 and self.size() >= self.max_bytes

    def append(self, records: Iterable[ExchangeRecord]) -> int:
        lines = "".join(r.model_dump_json() + "\n" for r in records)
        with self._lock, open(self.path, "a+b", opener=private) as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    # The last write was torn by a crash: end that line so this record is not glued onto it.
                    lines = "\n" + lines
            f.write(lines.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        return lines.count("\n")

    def replay_batches(self, size: int) -> Iterator[list[ExchangeRecord]]:
        """Batches of up to `size` records to replay, read as a stream (the file can be larger than memory):
        the file being replayed, else the current spool moved aside for replay. Call `done_batch()` once
        every batch is stored."""
        with self._lock:
            if _size(self.replaying) == 0 and _size(self.path) > 0:
                os.replace(self.path, self.replaying)
                fsync_path(self.path.parent)
        if _size(self.replaying) == 0:
            return
        batch: list[ExchangeRecord] = []
        with open(self.replaying, "rb") as f:
            for n, raw in enumerate(f, 1):
                record = self._parse(raw, n)
                if record is None:
                    continue
                batch.append(record)
                if len(batch) >= size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def take_batch(self) -> list[ExchangeRecord]:
        """Every record to replay, in one list (tests and small spools)."""
        return [r for batch in self.replay_batches(1 << 30) for r in batch]

    def done_batch(self) -> None:
        with self._lock:
            self.replaying.unlink(missing_ok=True)
            fsync_path(self.path.parent)

    def count(self) -> int:
        n = 0
        for p in (self.path, self.replaying):
            if p.exists():
                with open(p, "rb") as f:
                    n += sum(1 for _ in f)
        return n

    def _parse(self, raw: bytes, n: int) -> ExchangeRecord | None:
        if not raw.endswith(b"\n"):
            # A torn last line: the process died mid-write, before that record was acknowledged anywhere.
            log.warning("spool %s: skipping torn line %d", self.replaying, n)
            self.skipped += 1
            return None
        if not raw.strip():
            return None
        try:
            return ExchangeRecord.model_validate_json(raw)
        except (ValidationError, ValueError):
            log.warning("spool %s: skipping unreadable line %d", self.replaying, n)
            self.skipped += 1
            return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
