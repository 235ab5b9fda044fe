"""Erasure, the Redis and file side: a session's records leave Redis at once (the admin call), and every copy
of its text on disk (sleep snapshots, the retention archive) is rewritten without it (the erase job, which
also rebuilds the tenant's adapter lineage without it: worker/erase.py).

A session id erased stays in the tenant's `erased` hash: a sleep already running with it in its snapshot
never publishes, and the erase job knows which adapter versions carry it (their lineage names it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import redis

from sleepd import keys
from sleepd.durable import private
from sleepd.records import ExchangeRecord


def erase_session(client: redis.Redis, tenant: str, session_id: str, now: float | None = None) -> int:
    """Delete one session's records from Redis and mark it erased. Returns the records deleted."""
    ids: list[bytes] = client.lrange(keys.session_entries(session_id, tenant), 0, -1)  # type: ignore[assignment]
    pipe = client.pipeline(transaction=True)
    if ids:
        pipe.xdel(keys.session_stream(tenant), *ids)
    pipe.delete(keys.session_entries(session_id, tenant))
    pipe.zrem(keys.session_index(tenant), session_id)
    pipe.hset(keys.erased_sessions(tenant), session_id, now or time.time())
    results = pipe.execute()
    return int(results[0]) if ids else 0


def tenant_sessions(client: redis.Redis, tenant: str) -> list[str]:
    """Every session of the tenant still indexed in Redis."""
    return [s.decode() for s in client.zrange(keys.session_index(tenant), 0, -1)]  # type: ignore[union-attr]


def erased(client: redis.Redis, tenant: str) -> set[str]:
    return {s.decode() for s in client.hkeys(keys.erased_sessions(tenant))}  # type: ignore[union-attr]


def session_records(client: redis.Redis, tenant: str, session_ids: set[str]) -> tuple[list[ExchangeRecord], list[str]]:
    """The records of these sessions still in Redis, in stream order, and the sessions with none left (trimmed
    by retention after an adapter consolidated them: that adapter is then their only copy)."""
    found: list[tuple[str, ExchangeRecord]] = []
    missing: list[str] = []
    stream = keys.session_stream(tenant)
    for sid in sorted(session_ids):
        ids: list[bytes] = client.lrange(keys.session_entries(sid, tenant), 0, -1)  # type: ignore[assignment]
        if not ids:
            missing.append(sid)
            continue
        pipe = client.pipeline(transaction=False)
        for eid in ids:
            pipe.xrange(stream, min=eid, max=eid, count=1)
        for rows in pipe.execute():
            for eid, fields in rows:
                found.append((eid.decode(), ExchangeRecord.model_validate_json(fields[b"data"])))
    found.sort(key=lambda row: tuple(int(x) for x in row[0].split("-")))
    return [rec for _, rec in found], missing


def scrub_jsonl(path: Path, drop: Any) -> int:
    """Rewrite a JSONL file without the lines `drop(obj)` is true for (atomically, owner-only). Returns how many."""
    kept: list[str] = []
    dropped = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            kept.append(line)
            continue
        if drop(obj):
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        tmp = path.with_suffix(".scrub")
        with open(tmp, "w", encoding="utf-8", opener=private) as f:
            f.write("".join(k + "\n" for k in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


def scrub_files(roots: list[Path], tenant: str, sessions: set[str]) -> int:
    """Remove the sessions' records from every snapshot and archive file under `roots`. Returns records removed."""

    def record_of(obj: dict[str, Any]) -> dict[str, Any]:
        return obj.get("record", obj)  # archive lines wrap the record; snapshot lines are the record

    def drop(obj: Any) -> bool:
        rec = record_of(obj) if isinstance(obj, dict) else {}
        return rec.get("tenant", "default") == tenant and rec.get("session_id") in sessions

    removed = 0
    for root in roots:
        if root.is_dir():
            for path in root.rglob("*.jsonl"):
                removed += scrub_jsonl(path, drop)
    return removed
