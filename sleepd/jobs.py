"""Sleep job records in Redis (one hash per job, plus a newest-first list): what the admin API and CLI show."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from sleepd import keys

# superseded: published, but the pointer had moved (an operator's rollback) and was left where it was, or a session
# it learned from was erased while it ran. done: an erase job finished (worker/erase.py).
TERMINAL = {"published", "superseded", "rejected", "skipped", "failed", "done"}
_JSON_FIELDS = ("options", "metrics", "report", "phases")
_TTL_S = 30 * 24 * 3600


class JobStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(self, job_id: str, options: dict[str, Any]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.sleep_job(job_id), mapping={
            "job_id": job_id, "state": "queued", "phase": "queued", "progress": 0.0,
            "options": json.dumps(options), "created_at": time.time(), "attempts": 0,
        })  # fmt: skip
        pipe.expire(keys.sleep_job(job_id), _TTL_S)
        pipe.lpush(keys.SLEEP_JOBS, job_id)
        pipe.ltrim(keys.SLEEP_JOBS, 0, 999)
        pipe.execute()

    def update(self, job_id: str, **fields: Any) -> None:
        mapping = {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items() if v is not None}
        state = fields.get("state")
        if state not in TERMINAL and state != "running":
            self.redis.hset(keys.sleep_job(job_id), mapping=mapping)  # type: ignore[arg-type]
            return
        # State changes also keep the summary /metrics reads (keys.SLEEP_SUMMARY) current, in the same transaction.
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.sleep_job(job_id), mapping=mapping)  # type: ignore[arg-type]
        if state == "running":
            pipe.hset(keys.SLEEP_SUMMARY, "running", job_id)
        else:
            pipe.hincrby(keys.SLEEP_OUTCOMES, state, 1)
            summary = {"running": "", "last_finished": job_id, "last_finished_at": time.time()}
            if state == "published":
                summary |= {"last_published": job_id, "last_published_at": time.time()}
            pipe.hset(keys.SLEEP_SUMMARY, mapping=summary)  # type: ignore[arg-type]
        pipe.execute()

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(keys.sleep_job(job_id))
        if not raw:
            return None
        out: dict[str, Any] = {}
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else k
            val = v.decode() if isinstance(v, bytes) else v
            out[key] = json.loads(val) if key in _JSON_FIELDS else _number(val)
        return out

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        ids = [i.decode() if isinstance(i, bytes) else i for i in self.redis.lrange(keys.SLEEP_JOBS, 0, limit - 1)]
        return [j for j in (self.get(i) for i in ids) if j]


def _number(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
