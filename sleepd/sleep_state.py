"""Sleep state in Redis that outlives one cycle: the watermark (forward only), consecutive failures and their
backoff, retention of consolidated sessions, and worker heartbeats. Shared by the worker, the scheduler and the
API (which reads it for /admin/sleep and /metrics); each function is one or two round trips."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis

from sleepd import keys
from sleepd.config import Settings
from sleepd.durable import private
from sleepd.keys import DEFAULT_TENANT

# Stream ids are "<ms>-<seq>"; compare them as number pairs. KEYS: watermark. ARGV: new id. 1 = moved.
_ADVANCE = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local cms, cseq = parse(cur)
  local nms, nseq = parse(ARGV[1])
  if nms < cms or (nms == cms and nseq <= cseq) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def watermark(client: redis.Redis, tenant: str = DEFAULT_TENANT) -> str | None:
    raw = client.get(keys.sleep_watermark(tenant))
    return raw.decode() if isinstance(raw, bytes) else raw  # type: ignore[return-value]


def advance_watermark(client: redis.Redis, upto: str, tenant: str = DEFAULT_TENANT) -> bool:
    """Move the watermark to `upto` only if that is later: a late or resumed cycle can never move it back
    (and so make consolidated sessions pending again, or let retention keep what it should drop)."""
    if upto in ("", "0-0"):
        return False
    return bool(client.eval(_ADVANCE, 1, keys.sleep_watermark(tenant), upto))


@dataclass
class Failures:
    count: int = 0
    last_error: str = ""
    backoff_until: float = 0.0
    stopped: bool = False

    def reason(self, now: float) -> str | None:
        """Why the scheduler must not start a cycle now, or None."""
        if self.stopped:
            return (
                f"sleeps stopped after {self.count} consecutive failures (last: {self.last_error}); "
                "fix the cause, then POST /admin/sleep with force=true (or `sleepd sleep --force`)"
            )
        if now < self.backoff_until:
            until = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.backoff_until))
            return f"backing off after {self.count} failed cycle(s) until {until} UTC"
        return None


def failures(client: redis.Redis) -> Failures:
    raw = {k.decode(): v.decode() for k, v in client.hgetall(keys.SLEEP_FAILURES).items()}  # type: ignore[union-attr]
    return _failures(raw)


def _failures(raw: dict[str, str]) -> Failures:
    return Failures(
        count=int(raw.get("count", 0)),
        last_error=raw.get("last_error", ""),
        backoff_until=float(raw.get("backoff_until", 0)),
        stopped=raw.get("stopped") == "1",
    )


def record_failure(client: redis.Redis, settings: Settings, error: str, now: float | None = None) -> Failures:
    """One more consecutive failure: back off exponentially (base * 2^(n-1), capped), and stop scheduling
    after `sleep_max_failures` until an operator forces a cycle."""
    now = now or time.time()
    count = int(client.hincrby(keys.SLEEP_FAILURES, "count", 1))  # type: ignore[arg-type]
    delay = min(settings.sleep_failure_backoff_s * 2 ** (count - 1), settings.sleep_failure_backoff_max_s)
    stopped = count >= settings.sleep_max_failures
    # The error names its type only: exception text can quote session content (Redis keeps it for days).
    client.hset(keys.SLEEP_FAILURES, mapping={
        "last_error": error[:200], "backoff_until": now + delay, "stopped": int(stopped),
    })  # fmt: skip
    return Failures(count, error[:200], now + delay, stopped)


def clear_failures(client: redis.Redis) -> None:
    client.delete(keys.SLEEP_FAILURES)


def trim_consolidated(
    client: redis.Redis, settings: Settings, now: float | None = None, tenant: str = DEFAULT_TENANT
) -> int:
    """Drop from Redis the session records that a published adapter includes (at or before the watermark) and
    that are older than `session_retention`; their per-session lists and index entries go with them. With
    `session_archive_dir` set they are appended to a JSONL file there (fsync'd) first. Returns records dropped."""
    mark = watermark(client, tenant)
    stream, index = keys.session_stream(tenant), keys.session_index(tenant)
    if not mark:
        return 0
    now = now or time.time()
    cutoff_ms = int((now - _seconds(settings.session_retention)) * 1000)
    mark_ms, mark_seq = (int(x) for x in mark.split("-"))
    # Everything strictly before `minid` goes: consolidated (<= watermark) and older than the cutoff.
    minid = f"{cutoff_ms}-0" if cutoff_ms <= mark_ms else f"{mark_ms}-{mark_seq + 1}"
    # Page through what will go: the sessions it belongs to (their lists and index entries follow), and the
    # archive. Each record is read here once in its life, by the scheduler, never on the request path.
    archive = Path(settings.session_archive_dir) if settings.session_archive_dir else None
    sessions: set[str] = set()
    lo, path = "-", None
    while True:
        rows: list[Any] = client.xrange(stream, min=lo, max=f"({minid}", count=10_000)  # type: ignore[assignment]
        if not rows:
            break
        sessions.update(fields[b"session_id"].decode() for _, fields in rows)
        if archive is not None:
            path = path or archive / f"sessions-{tenant}-{rows[0][0].decode()}.jsonl"
            _archive(path, rows)
        lo = f"({rows[-1][0].decode()}"
    dropped = int(client.xtrim(stream, minid=minid, approximate=False))  # type: ignore[arg-type]
    ordered = sorted(sessions)
    for i in range(0, len(ordered), 500):
        batch = ordered[i : i + 500]
        client.eval(_TRIM_SESSIONS, len(batch) + 1, index, *[keys.session_entries(s, tenant) for s in batch],
                    minid, *batch)  # fmt: skip
    return dropped


# KEYS: index, then each session's entries list. ARGV: minid, then the session ids. Drops list ids < minid; a
# session left with none leaves the index.
_TRIM_SESSIONS = """
local function before(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
for i = 2, #KEYS do
  while true do
    local first = redis.call('LINDEX', KEYS[i], 0)
    if not first or not before(first, ARGV[1]) then break end
    redis.call('LPOP', KEYS[i])
  end
  if redis.call('LLEN', KEYS[i]) == 0 then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return 1
"""


def _archive(path: Path, rows: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", opener=private) as f:
        for eid, fields in rows:
            f.write(json.dumps({"id": eid.decode(), "record": json.loads(fields[b"data"])}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def heartbeat(client: redis.Redis, name: str, now: float | None = None) -> None:
    client.zadd(keys.WORKERS, {name: now or time.time()})


def workers_alive(client: redis.Redis, within_s: float = 90.0, now: float | None = None) -> int:
    now = now or time.time()
    client.zremrangebyscore(keys.WORKERS, "-inf", now - 24 * 3600)  # forget workers gone for a day
    return int(client.zcount(keys.WORKERS, now - within_s, "+inf"))


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
