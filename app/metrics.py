"""sleepd's own Prometheus metrics. vLLM's (`vllm:*`) live in the same default registry and are served beside."""

from __future__ import annotations

from collections import OrderedDict

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("sleepd_requests_total", "API requests by endpoint and HTTP status.", ["endpoint", "status"])
REQUEST_LATENCY = Histogram(
    "sleepd_request_latency_seconds",
    "End-to-end request latency, by endpoint and the adapter version that served it ('base': no adapter; when no"
    " version was chosen: 'none', e.g. a refused request).",
    ["endpoint", "version"],
    buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "sleepd_time_to_first_token_seconds",
    "Time to the first streamed token, by endpoint and the adapter version that served it.",
    ["endpoint", "version"],
    buckets=_LATENCY_BUCKETS,
)


class VersionSeries:
    """Keeps the `version` label of the latency histograms bounded: a server meets a new version per sleep, for
    months; the series of the `keep` most recently seen versions stay, older ones are removed."""

    def __init__(self, histograms: tuple[Histogram, ...], keep: int = 16) -> None:
        self.histograms, self.keep = histograms, keep
        self.seen: OrderedDict[str, set[str]] = OrderedDict()  # version -> endpoints observed with it

    def observe(self, histogram: Histogram, endpoint: str, version: str, seconds: float) -> None:
        self.seen.setdefault(version, set()).add(endpoint)
        self.seen.move_to_end(version)
        while len(self.seen) > self.keep:
            old, endpoints = self.seen.popitem(last=False)
            for h in self.histograms:
                for e in endpoints:
                    try:
                        h.remove(e, old)
                    except KeyError:  # this histogram never saw that pair
                        pass
        histogram.labels(endpoint, version).observe(seconds)


LATENCY_BY_VERSION = VersionSeries((REQUEST_LATENCY, TTFT))
TENANT_REQUESTS = Counter(
    "sleepd_tenant_requests_total",
    "/v1 requests with an API key, by tenant and consent (learn, audit, drop). Tenants are operator-created, so"
    " the label stays bounded.",
    ["tenant", "consent"],
)
AUTH_REFUSED = Counter("sleepd_auth_refused_total", "/v1 requests refused with 401, by code.", ["code"])
TOKENS = Counter("sleepd_tokens_total", "Tokens processed, by kind (prompt, completion).", ["kind"])

SESSION_RECORDS = Counter(
    "sleepd_session_log_records_total",
    "Exchange records by where they went: redis, spooled, replayed (spool to redis), duplicate, held (in memory:"
    " the spool could not take them), unreadable (spool lines skipped by replay).",
    ["outcome"],
)
SESSION_LOG_RESTARTS = Counter(
    "sleepd_session_log_restarts_total", "Session log loops restarted after an unexpected error.", ["loop"]
)
SESSION_LOG_REFUSED = Counter(
    "sleepd_session_log_refused_total", "Requests refused (503) because the spool reached SLEEPD_SPOOL_MAX_BYTES."
)
SESSION_QUEUE_DEPTH = Gauge("sleepd_session_log_queue_depth", "Records waiting in memory for the log writer.")
SESSION_SPOOL_PENDING = Gauge("sleepd_session_log_spool_pending", "Records in the local spool awaiting Redis.")
SESSION_WRITE_SECONDS = Histogram(
    "sleepd_session_log_write_seconds", "Time to store one batch of records in Redis.", buckets=_LATENCY_BUCKETS
)
REDIS_UP = Gauge("sleepd_redis_up", "1 while the session log reaches Redis, 0 while it spools.")
ENGINE_READY = Gauge("sleepd_engine_ready", "1 once the vLLM engine serves requests.")

ACTIVE_ADAPTER = Gauge("sleepd_active_adapter_info", "1 for the adapter version this process serves.", ["version"])
ADAPTER_SWAPS = Counter("sleepd_adapter_swaps_total", "Adapter activations by outcome (ok, rejected).", ["outcome"])
ADAPTER_REJECTIONS = Counter(
    "sleepd_adapter_rejections_total", "Adapters refused (corrupt, incompatible, load error), by reason.", ["reason"]
)
ADAPTER_LOAD_SECONDS = Histogram(
    "sleepd_adapter_load_seconds", "Verify + load + warm-up time of a new adapter.", buckets=_LATENCY_BUCKETS
)
ADAPTERS_LOADED = Gauge("sleepd_adapters_loaded", "Adapter versions loaded in the engine (active + draining).")
ADAPTER_LEASES = Gauge("sleepd_adapter_leases", "Requests in flight holding an adapter version (lease/ticket).")
ADAPTER_DRAIN_REVOKED = Counter(
    "sleepd_adapter_drain_revoked_total", "Requests ended because they outlived their version's drain deadline."
)
ADAPTER_SKEW = Gauge("sleepd_adapter_skew", "1 while this server serves another version than the pointer says.")
ADAPTER_LOAD_RETRIES = Counter(
    "sleepd_adapter_load_retries_total", "Failed loads of the pointer's version that will be retried (backoff)."
)
ADAPTER_MERGES = Counter(
    "sleepd_adapter_merges_total",
    "Merges of the active version into the engine's weights, by outcome (ok, busy, superseded, error, ...).",
    ["outcome"],
)
ADAPTER_MERGE_SECONDS = Histogram(
    "sleepd_adapter_merge_seconds",
    "Activation -> merged weights serving (delay, build, drain, reload).",
    buckets=_LATENCY_BUCKETS,
)
ADAPTER_SERVING_MERGED = Gauge(
    "sleepd_adapter_serving_merged", "1 while new requests run on merged weights (no LoRA), 0 on the LoRA path."
)
SLEEP_METRICS_ERRORS = Counter("sleepd_metrics_refresh_errors_total", "Failed refreshes of the sleep metrics.")


# A labelled counter has no series until its first increment, which then appears at 1: rate() and increase()
# never see that first event (the first swap, rejection or merge after a server starts). The known label
# values start at 0 instead.
for _outcome in ("redis", "spooled", "replayed", "duplicate", "held", "unreadable"):
    SESSION_RECORDS.labels(_outcome)
for _loop in ("writer", "replay"):
    SESSION_LOG_RESTARTS.labels(_loop)
for _outcome in ("ok", "rejected"):
    ADAPTER_SWAPS.labels(_outcome)
for _outcome in ("ok", "busy", "superseded", "not_mergeable", "error"):
    ADAPTER_MERGES.labels(_outcome)
ADAPTER_REJECTIONS.labels("invalid")
