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


def test_a_good_record_after_a_torn_line_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    spool = Spool(path)
    spool.append([rec(1)])
    with open(path, "a") as f:
        f.write(rec(2).model_dump_json()[:20])  # a crash mid-write
    spool.append([rec(3)])  # the next process appends after the torn line
    assert [r.session_id for r in spool.take_batch()] == ["s1", "s3"]
    assert spool.skipped == 1


def test_unreadable_lines_are_skipped_and_replay_streams_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    spool = Spool(path)
    spool.append([rec(i) for i in range(5)])
    with open(path, "a") as f:
        f.write('{"not": "a record"}\n')
    spool.append([rec(5)])
    batches = [[r.session_id for r in b] for b in spool.replay_batches(2)]
    assert batches == [["s0", "s1"], ["s2", "s3"], ["s4", "s5"]]
    assert spool.skipped == 1


def test_one_process_owns_a_spool(tmp_path: Path) -> None:
    import multiprocessing

    path = tmp_path / "sessions.jsonl"
    spool = Spool(path)
    spool.acquire()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_try_acquire, (str(path),)) == "SpoolInUse"
    spool.release()
    with ctx.Pool(1) as pool:
        assert pool.apply(_try_acquire, (str(path),)) == "ok"


def _try_acquire(path: str) -> str:
    from app.spool import SpoolInUse

    try:
        Spool(Path(path)).acquire()
    except SpoolInUse:
        return "SpoolInUse"
    return "ok"


def test_the_cap_marks_the_spool_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "sessions.jsonl", max_bytes=1000)
    assert not spool.full()
    spool.append([rec(i) for i in range(5)])
    assert spool.size() > 1000 and spool.full()


def test_the_spool_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    import stat

    spool = Spool(tmp_path / "sessions.jsonl")
    spool.append([rec(1)])
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
