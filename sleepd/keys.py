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
