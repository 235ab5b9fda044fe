"""Preemption: traffic returning mid-sleep stops the cycle before it publishes anything or consumes a session,
and the resumed cycle learns from the same snapshot. In-process `run_cycle` (what the Celery task calls) on
the tiny model against the machine's real Redis."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from sleepd import keys
from sleepd.config import Settings
from sleepd.jobs import JobStore
from sleepd.records import ExchangeRecord, LoggedChoice
from sleepd.registry import AdapterRegistry
from worker.cycle import Preempted, run_cycle


def log_session(client: redis.Redis, session_id: str, text: str) -> None:
    rec = ExchangeRecord(
        session_id=session_id, endpoint="chat", model="sleepd", messages=[{"role": "user", "content": text}],
        choices=[LoggedChoice(text="Noted.", finish_reason="stop")], prompt_tokens=20, completion_tokens=2,
    )  # fmt: skip
    client.xadd(keys.SESSION_STREAM, {"session_id": session_id, "record_id": rec.record_id,
                                      "data": rec.model_dump_json()})  # fmt: skip


def raise_traffic_once_seeding(client: redis.Redis, job_id: str, stop: threading.Event) -> None:
    jobs = JobStore(client)
    while not stop.is_set():
        if (jobs.get(job_id) or {}).get("phase") == "seeding":
            client.set(keys.traffic(int(time.time() // 60)), 100)  # a burst of chats in this minute
            return
        time.sleep(0.02)


def test_traffic_mid_sleep_preempts_and_the_resumed_cycle_publishes(
    local_redis: redis.Redis, tiny_model: Path, tmp_path: Path
) -> None:
    url = local_redis.connection_pool.connection_kwargs
    settings = Settings(
        redis_url=f"redis://{url['host']}:{url['port']}/{url['db']}", model=str(tiny_model), data_dir=tmp_path,
        sleep_traffic_threshold=5, sleep_preempt_check_s=0, sleep_asked_per_statement=1, sleep_max_new_tokens=8,
        gate_min_recall_gain=-1, gate_max_anchor_kl=100, gate_max_base_kl=100,  # a random tiny model cannot learn
    )  # fmt: skip
    for i in range(2):
        log_session(local_redis, f"pre-{i}", f"Remember: locker {i} holds the red kite.")
    job_id = "sleep-preemption-test"
    options = {"steps": 40, "dream_rounds": 0, "rank": 4}  # not forced: traffic may preempt it
    JobStore(local_redis).create(job_id, options)
    registry = AdapterRegistry(settings.adapters_dir)

    stop = threading.Event()
    burst = threading.Thread(target=raise_traffic_once_seeding, args=(local_redis, job_id, stop))
    burst.start()
    try:
        with pytest.raises(Preempted, match="traffic above 5/min"):
            run_cycle(job_id, options, settings, local_redis)
    finally:
        stop.set()
        burst.join()
    assert JobStore(local_redis).get(job_id)["phase"] == "seeding"  # stopped while training, not before
    assert registry.versions() == [] and not list(registry.root.glob("**/*.safetensors"))
    assert local_redis.get(keys.SLEEP_WATERMARK) is None, "a preempted cycle must not consume its sessions"
    snapshot = (tmp_path / "sleep" / job_id / "sessions.jsonl").read_text()

    # Traffic falls again; the retried task resumes from the same snapshot and publishes.
    local_redis.delete(*local_redis.keys(keys.traffic(0).rsplit(":", 1)[0] + ":*"))
    log_session(local_redis, "late", "A session after the snapshot waits for the next sleep.")
    job = run_cycle(job_id, options, settings, local_redis)
    assert job["state"] == "published", job
    meta = registry.get(job["report"]["version"])
    assert set(meta.lineage["sessions"]) == {"pre-0", "pre-1"}
    assert (tmp_path / "sleep" / job_id / "sessions.jsonl").read_text() == snapshot
    assert local_redis.get(keys.SLEEP_WATERMARK) is not None
