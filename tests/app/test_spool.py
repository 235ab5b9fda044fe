"""The local spool: appends survive, replay hands each record out until it is confirmed, torn lines are skipped."""

from __future__ import annotations

from pathlib import Path

from app.spool import Spool
from sleepd.records import ExchangeRecord


def rec(i: int) -> ExchangeRecord:
    return ExchangeRecord(
        session_id=f"s{i}", endpoint="chat", model="m", messages=[{"role": "user", "content": str(i)}]
    )


def test_append_take_done(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool" / "sessions.jsonl")
    assert not spool.pending()
    spool.append([rec(1), rec(2)])
    assert spool.pending() and spool.count() == 2
    batch = spool.take_batch()
    assert [r.session_id for r in batch] == ["s1", "s2"]
    spool.append([rec(3)])  # appends go on while a batch is out for replay
    assert [r.session_id for r in spool.take_batch()] == ["s1", "s2"], "an unconfirmed batch is handed out again"
    spool.done_batch()
    assert [r.session_id for r in spool.take_batch()] == ["s3"]
    spool.done_batch()
    assert not spool.pending() and spool.count() == 0


def test_a_reopened_spool_still_has_its_records(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    Spool(path).append([rec(1)])
    Spool(path).take_batch()  # moved aside for replay, then the process "dies"
    again = Spool(path)
    assert again.pending() and [r.session_id for r in again.take_batch()] == ["s1"]


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    spool = Spool(path)
    spool.append([rec(1)])
    with open(path, "a") as f:
        f.write(rec(2).model_dump_json()[:20])  # a write cut by a crash
    assert [r.session_id for r in spool.take_batch()] == ["s1"]
