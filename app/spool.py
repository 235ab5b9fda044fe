"""A local, fsync'd JSONL spool for exchange records that could not reach Redis.

Appends go to `sessions.jsonl`. Replay first renames it to `sessions.replaying.jsonl` (so appends can go on
into a fresh file), sends that file's records, and deletes it only once all are stored. A crash in between
leaves the file for the next replay; the store's per-record marker makes the resend store each record once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from sleepd.durable import fsync_path
from sleepd.records import ExchangeRecord

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.replaying = path.with_name(path.stem + ".replaying.jsonl")
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def pending(self) -> bool:
        return _size(self.path) > 0 or _size(self.replaying) > 0

    def append(self, records: Iterable[ExchangeRecord]) -> int:
        lines = "".join(r.model_dump_json() + "\n" for r in records)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        return lines.count("\n")

    def take_batch(self) -> list[ExchangeRecord]:
        """Records to replay: the file being replayed, else the current spool moved aside for replay."""
        with self._lock:
            if _size(self.replaying) == 0 and _size(self.path) > 0:
                os.replace(self.path, self.replaying)
                fsync_path(self.path.parent)
            if _size(self.replaying) == 0:
                return []
            return _read(self.replaying)

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


def _read(path: Path) -> list[ExchangeRecord]:
    out: list[ExchangeRecord] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                # A torn last line: the process died mid-write, before that record was acknowledged anywhere.
                log.warning("spool %s: dropping torn line %d", path, n)
                continue
            out.append(ExchangeRecord.model_validate_json(line))
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
