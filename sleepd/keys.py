"""Every Redis key sleepd uses, in one place, with what it holds and how long it lives."""

from __future__ import annotations

PREFIX = "sleepd"

# Stream of logged exchanges (XADD, never trimmed by the server: the sleep cycle consumes it). Per tenant:
# `session_stream(tenant)`; these are the default tenant's.
SESSION_STREAM = f"{PREFIX}:sessions:log"
# Sorted set: session id -> unix time of its latest exchange (the "recent sessions" index).
SESSION_INDEX = f"{PREFIX}:sessions:index"


DEFAULT_TENANT = "default"  # the single-tenant deployment's memory; its keys keep their pre-tenant names


def session_entries(session_id: str, tenant: str = DEFAULT_TENANT) -> str:
    """List of stream entry ids of one session, in arrival order."""
    return f"{_t(tenant)}session:{session_id}:entries"


def _t(tenant: str) -> str:
    """Key prefix of a tenant's own keys. The default tenant's are the pre-tenant names (no migration)."""
    return f"{PREFIX}:" if tenant == DEFAULT_TENANT else f"{PREFIX}:tenant:{tenant}:"


def session_stream(tenant: str = DEFAULT_TENANT) -> str:
    """Stream of one tenant's logged exchanges: tenants never share a stream, a watermark or a pointer."""
    return f"{_t(tenant)}sessions:log"


def session_index(tenant: str = DEFAULT_TENANT) -> str:
    return f"{_t(tenant)}sessions:index"


def adapter_active(tenant: str = DEFAULT_TENANT) -> str:
    return f"{_t(tenant)}adapters:active"


def adapter_history(tenant: str = DEFAULT_TENANT) -> str:
    return f"{_t(tenant)}adapters:history"


def sleep_watermark(tenant: str = DEFAULT_TENANT) -> str:
    return f"{_t(tenant)}sleep:watermark"


def sleep_rejections(tenant: str = DEFAULT_TENANT) -> str:
    return f"{_t(tenant)}sleep:rejections"


def erased_sessions(tenant: str = DEFAULT_TENANT) -> str:
    """Hash: session id -> unix time it was erased. A sleep whose snapshot holds one of them never publishes."""
    return f"{_t(tenant)}sessions:erased"


# Tenants and API keys (sleepd/tenants.py).
TENANTS = f"{PREFIX}:tenants"  # set of tenant names that logged a session or own a key
API_KEYS = f"{PREFIX}:apikeys"  # hash: sha256 of a key -> JSON ApiKey (revoked ones stay, marked)
API_KEYS_VERSION = f"{PREFIX}:apikeys:version"  # INCR on every change: servers reload their cache on a change
ERASURES_PENDING = f"{PREFIX}:erasures:pending"  # set of tenants with an erasure waiting for the sleep slot


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
