"""The end of a sleep cycle, in-process (`run_cycle`, what the Celery task calls) against the machine's real
Redis: the pointer moves only from the version the sleep built on (an operator's rollback wins), and a sleep
never builds on a previous adapter whose files no longer match their hash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from sleepd import keys
from sleepd.config import Settings
from sleepd.jobs import JobStore
from sleepd.registry import AdapterRegistry, InvalidAdapter, base_model_fingerprint
from sleepd.testing import build_random_lora
from tests.conftest import CACHE, ROOT
from tests.worker.test_preemption import log_session
from worker.cycle import TimedOut, run_cycle


def settings_for(client: redis.Redis, model: Path, data_dir: Path) -> Settings:
    url = client.connection_pool.connection_kwargs
    return Settings(
        redis_url=f"redis://{url['host']}:{url['port']}/{url['db']}", model=str(model), data_dir=data_dir,
        sleep_questions_per_memory=1, sleep_max_new_tokens=8,
        gate_min_recall_gain=-1, gate_max_anchor_kl=100,  # a random tiny model cannot learn: relax the gate
    )  # fmt: skip


def active(client: redis.Redis) -> str:
    value = client.get(keys.ADAPTER_ACTIVE)
    return value.decode() if isinstance(value, bytes) else "base"


@pytest.fixture()
def lora(tiny_model: Path) -> Path:
    return build_random_lora(tiny_model, CACHE / "adapters" / "tiny-one", seed=1)


def test_a_sleep_finishing_after_a_rollback_does_not_undo_it(
    local_redis: redis.Redis, tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    settings = settings_for(local_redis, tiny_model, tmp_path)
    registry = AdapterRegistry(settings.adapters_dir)
    fingerprint = base_model_fingerprint(tiny_model)
    v1 = registry.publish(lora, base_model=fingerprint).version
    v2 = registry.publish(lora, base_model=fingerprint, parent=v1).version
    local_redis.set(keys.ADAPTER_ACTIVE, v2)  # the sleep starts on v2 ...
    # ... and has trained and published v3 on top of it (what a cycle leaves behind just before the pointer step).
    v3 = registry.publish(lora, base_model=fingerprint, parent=v2).version
    job_id = "sleep-after-rollback"
    JobStore(local_redis).create(job_id, {})
    workdir = tmp_path / "sleep" / job_id
    workdir.mkdir(parents=True)
    log_session(local_redis, "s-1", "Remember: locker 1 holds the red kite.")
    record = local_redis.xrange(keys.SESSION_STREAM)[0]
    (workdir / "sessions.jsonl").write_text(record[1][b"data"].decode() + "\n")
    (workdir / "snapshot.json").write_text(json.dumps({"upto": record[0].decode(), "records": 1}))
    (workdir / "published.json").write_text(json.dumps({"version": v3, "parent": v2, "gate": {"passed": True}}))

    # Meanwhile an operator rolls back to v1 (v2 misbehaved).
    local_redis.set(keys.ADAPTER_ACTIVE, v1)
    job = run_cycle(job_id, {}, settings, local_redis)

    assert active(local_redis) == v1, "the sleep's publish undid the operator's rollback"
    assert job["state"] == "superseded", job
    assert v1 in job["error"] and v2 in job["error"]
    assert local_redis.get(keys.SLEEP_WATERMARK) is None, "sessions stay pending: no active adapter holds them"


def test_a_sleep_refuses_to_build_on_a_corrupt_previous_adapter(
    local_redis: redis.Redis, tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    settings = settings_for(local_redis, tiny_model, tmp_path)
    registry = AdapterRegistry(settings.adapters_dir)
    v1 = registry.publish(lora, base_model=base_model_fingerprint(tiny_model)).version
    local_redis.set(keys.ADAPTER_ACTIVE, v1)
    weights = registry.path(v1) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)  # bit rot after publishing
    log_session(local_redis, "s-1", "Remember: locker 1 holds the red kite.")
    job_id = "sleep-on-corrupt"
    options = {"steps": 2, "dream_rounds": 0, "rank": 4, "force": True}
    JobStore(local_redis).create(job_id, options)

    with pytest.raises(InvalidAdapter, match="hash"):
        run_cycle(job_id, options, settings, local_redis)
    assert [m.version for m in registry.versions()] == [v1], "nothing may be built on a corrupt adapter"
    assert active(local_redis) == v1 and local_redis.get(keys.SLEEP_WATERMARK) is None


def test_a_cycle_past_its_soft_time_limit_stops_and_publishes_nothing(
    local_redis: redis.Redis, tiny_model: Path, tmp_path: Path
) -> None:
    settings = settings_for(local_redis, tiny_model, tmp_path).model_copy(update={"sleep_soft_time_limit_s": 0})
    log_session(local_redis, "s-1", "Remember: locker 1 holds the red kite.")
    JobStore(local_redis).create("sleep-slow", {})
    with pytest.raises(TimedOut, match="soft time limit"):
        run_cycle("sleep-slow", {}, settings, local_redis)
    assert active(local_redis) == "base" and local_redis.get(keys.SLEEP_WATERMARK) is None
    assert AdapterRegistry(settings.adapters_dir).versions() == []


def test_the_watchdog_ends_a_hung_process() -> None:
    code = "import time; from worker.cycle import watchdog\nwith watchdog(0.5, 'job'):\n    time.sleep(30)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 70, done.stderr.decode()[-2000:]


def test_a_sleep_whose_session_was_erased_meanwhile_publishes_nothing(
    local_redis: redis.Redis, tiny_model: Path, lora: Path, tmp_path: Path
) -> None:
    from sleepd.erasure import erase_session

    settings = settings_for(local_redis, tiny_model, tmp_path)
    registry = AdapterRegistry(settings.adapters_dir)
    job_id = "sleep-erased-meanwhile"
    JobStore(local_redis).create(job_id, {})
    workdir = tmp_path / "sleep" / job_id
    workdir.mkdir(parents=True)
    log_session(local_redis, "s-erased", "Remember: my locker code is 5521.")
    record = local_redis.xrange(keys.SESSION_STREAM)[0]
    local_redis.rpush(keys.session_entries("s-erased"), record[0])  # indexed as the server's append script does
    (workdir / "sessions.jsonl").write_text(record[1][b"data"].decode() + "\n")
    (workdir / "snapshot.json").write_text(json.dumps({"upto": record[0].decode(), "records": 1}))
    # The cycle trained and published its candidate into the registry; the user's erasure lands before the pointer.
    candidate = registry.publish(lora, base_model=base_model_fingerprint(tiny_model)).version
    (workdir / "published.json").write_text(json.dumps({"version": candidate, "parent": None, "gate": {}}))
    assert erase_session(local_redis, "default", "s-erased") == 1

    job = run_cycle(job_id, {}, settings, local_redis)

    assert job["state"] == "superseded" and "erased" in job["error"], job
    assert active(local_redis) == "base"
    assert not (registry.root / candidate).exists(), "the candidate trained on an erased session is still on disk"
    assert local_redis.xlen(keys.SESSION_STREAM) == 0


def test_opted_out_exchanges_never_enter_a_snapshot_and_tenants_snapshot_only_their_own(
    local_redis: redis.Redis, tmp_path: Path
) -> None:
    from sleepd.records import ExchangeRecord
    from worker.cycle import _snapshot

    def log(session: str, tenant: str, learn: bool) -> str:
        rec = ExchangeRecord(session_id=session, tenant=tenant, endpoint="chat", model="sleepd", learn=learn,
                             messages=[{"role": "user", "content": f"{session}: my code is 1234"}])  # fmt: skip
        local_redis.xadd(keys.session_stream(tenant), {"session_id": session, "record_id": rec.record_id,
                                                       "data": rec.model_dump_json()})  # fmt: skip
        return rec.record_id

    kept = log("s-on", "acme", True)
    log("s-off", "acme", False)
    log("s-other", "globex", True)
    (tmp_path / "acme-job").mkdir()
    records, upto = _snapshot(local_redis, tmp_path / "acme-job", "acme")
    assert [r.record_id for r in records] == [kept]
    text = (tmp_path / "acme-job" / "sessions.jsonl").read_text()
    assert "s-off" not in text and "s-other" not in text
    assert upto == local_redis.xrange(keys.session_stream("acme"))[-1][0].decode()
