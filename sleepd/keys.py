"""Every Redis key sleepd uses, in one place, with what it holds and how long it lives."""

from __future__ import annotations

PREFIX = "sleepd"

# Stream of logged exchanges (XADD, never trimmed by the server: the sleep cycle consumes it).
SESSION_STREAM = f"{PREFIX}:sessions:log"
# Sorted set: session id -> unix time of its latest exchange (the "recent sessions" index).
SESSION_INDEX = f"{PREFIX}:sessions:index"


def session_entries(session_id: str) -> str:
    """List of stream entry ids of one session, in arrival order."""
    return f"{PREFIX}:session:{session_id}:entries"


def record_dedupe(record_id: str) -> str:
    """Marker that a record reached the stream; makes spool replay exactly-once. TTL: session_dedupe_ttl_s."""
    return f"{PREFIX}:sessions:seen:{record_id}"


# Adapter registry pointer: the active version ("base" for none), its change log, and the change channel.
ADAPTER_ACTIVE = f"{PREFIX}:adapters:active"
ADAPTER_HISTORY = f"{PREFIX}:adapters:history"  # list of JSON {version, previous, reason, at}, newest first
ADAPTER_EVENTS = f"{PREFIX}:adapters:events"  # pub/sub channel; message = the same JSON

# Sleep operations (worker/).
SLEEP_ACTIVE = f"{PREFIX}:sleep:active"  # job id of the cycle queued or running (SET NX: one at a time), TTL
SLEEP_LOCK = f"{PREFIX}:sleep:lock"  # the worker's lock while it trains: value = job id, TTL refreshed by heartbeat
SLEEP_FENCE = f"{PREFIX}:sleep:fence"  # INCR: fencing token, bumped by every lock acquisition
SLEEP_JOBS = f"{PREFIX}:sleep:jobs"  # list of job ids, newest first
SLEEP_WATERMARK = f"{PREFIX}:sleep:watermark"  # last session stream id a published adapter includes
SLEEP_REJECTIONS = f"{PREFIX}:sleep:rejections"  # gate rejections since the watermark last moved
SLEEP_FAILURES = f"{PREFIX}:sleep:failures"  # hash: consecutive failed cycles (count, last error, backoff_until)
SLEEP_OUTCOMES = f"{PREFIX}:sleep:outcomes"  # hash: terminal state -> cycles ended so (counters, never reset)
# Hash the worker and scheduler keep current, so that a /metrics scrape costs O(1) Redis calls: the last
# finished and last published job, the scheduler's latest decision (pending records/tokens, reasons).
SLEEP_SUMMARY = f"{PREFIX}:sleep:summary"
WORKERS = f"{PREFIX}:workers"  # sorted set: worker name -> unix time of its latest heartbeat
TRAFFIC_TTL_S = 3 * 3600


def sleep_job(job_id: str) -> str:
    """Hash: state, phase, progress, metrics (JSON), error, timestamps. Kept 30 days."""
    return f"{PREFIX}:sleep:job:{job_id}"


def traffic(minute: int) -> str:
    """Exchanges logged in one minute (unix time // 60); the scheduler's low-traffic signal. TTL: TRAFFIC_TTL_S."""
    return f"{PREFIX}:traffic:{minute}"
