"""A failed cycle, through the Celery task's own failure path (run eagerly, real Redis): the job record keeps the
exception's type, not its text (which can quote session content), the failure streak starts its backoff, the
one-cycle slot is freed, and the job's session snapshot is deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from sleepd import keys
from sleepd.jobs import JobStore
from sleepd.sleep_state import failures
from worker import tasks


def test_a_failed_cycle_keeps_no_session_text_and_backs_off(
    local_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLEEPD_REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("SLEEPD_DATA_DIR", str(tmp_path))
    snapshot = tmp_path / "sleep" / "job-1"

    def fails(job_id: str, *_: object) -> None:  # a fake cycle: the failure handling is what is tested
        snapshot.mkdir(parents=True)
        (snapshot / "sessions.jsonl").write_text('{"content": "my PIN is 4417"}\n')
        JobStore(local_redis).update(job_id, state="running")
        raise ValueError("could not parse 'my PIN is 4417'")

    monkeypatch.setattr(tasks, "run_cycle", fails)
    JobStore(local_redis).create("job-1", {})
    local_redis.set(keys.SLEEP_ACTIVE, "job-1")
    result = tasks.sleep_cycle.apply(args=["job-1", {}])
    assert isinstance(result.result, ValueError)
    job = JobStore(local_redis).get("job-1")
    assert job is not None and job["state"] == "failed"
    assert job["error"] == "ValueError (details in the worker log)" and "4417" not in str(job)
    assert failures(local_redis).count == 1 and failures(local_redis).backoff_until > 0
    assert local_redis.get(keys.SLEEP_ACTIVE) is None, "the slot must be free for the next cycle"
    assert not snapshot.exists(), "the failed job's session snapshot must not outlive it"
