"""sleepd's Grafana dashboards as code, built with Grafana's own `grafana-foundation-sdk`.

`python deploy/grafana/dashboards.py` writes one JSON file per dashboard into deploy/grafana/dashboards/, which
Grafana loads through deploy/grafana/provisioning/. tests/deploy/test_dashboards.py regenerates them and fails if
the committed files differ, or if a query names a metric (or a label of sleepd's metrics) the code does not define.

Every query reads sleepd's one scrape target per API server: `sleepd_*` (app/metrics.py, app/sleep_metrics.py) and
vLLM's `vllm:*`, served from the same /metrics. The sleep metrics are read from Redis by each API server, so
several servers report the same values: those panels take `max` across instances.
Panels that need metrics the code does not define yet are listed in deploy/NEEDED_METRICS.md, not drawn here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig, ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    GraphTresholdsStyleMode,  # sic: the SDK's spelling
    LegendDisplayMode,
    LegendPlacement,
    VisibilityMode,
    VizOrientation,
)

from sleepd.config import Settings

# The thresholds drawn are the shipped defaults, read from the settings so a changed default redraws them.
MIN_PENDING_TOKENS = Settings.model_fields["sleep_min_pending_tokens"].default
MAX_FAILURES = Settings.model_fields["sleep_max_failures"].default

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
# The data source that provisioning/datasources/prometheus.yaml creates, referenced by uid (stable across installs).
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="prometheus")
RATE = "$__rate_interval"  # Grafana's window for rate(): at least four scrape intervals


def q(expr: str, legend: str = "") -> prometheus.Dataquery:
    """One PromQL query; `legend` uses Grafana's {{label}} syntax."""
    query = prometheus.Dataquery().expr(expr).datasource(DATASOURCE).range()
    return query.legend_format(legend) if legend else query


def _targets(panel: Builder[model.Panel], queries: tuple[prometheus.Dataquery, ...]) -> None:
    for i, query in enumerate(queries):
        panel.with_target(query.ref_id(chr(ord("A") + i)))  # type: ignore[attr-defined]


def _threshold_lines(limits: list[tuple[float, str]]) -> dashboard.ThresholdsConfig:
    steps = [model.Threshold(value=None, color="green")] + [model.Threshold(value=v, color=c) for v, c in limits]
    return dashboard.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps)


def graph(
    title: str,
    description: str,
    *queries: prometheus.Dataquery,
    unit: str = "short",
    width: int = 12,
    limits: list[tuple[float, str]] | None = None,
) -> timeseries.Panel:
    """A time series; `limits` draws dashed threshold lines (value, color)."""
    panel = (
        timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
        .unit(unit).span(width).height(8).fill_opacity(10)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM)
                .show_legend(True))
    )  # fmt: skip
    if limits:
        panel.thresholds(_threshold_lines(limits)).thresholds_style(
            GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.DASHED)
        )
    _targets(panel, queries)
    return panel


def single(
    title: str,
    description: str,
    query: prometheus.Dataquery,
    *,
    unit: str = "short",
    width: int = 4,
    limits: list[tuple[float, str]] | None = None,
) -> stat.Panel:
    """One current value, colored by `limits`."""
    panel = (
        stat.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit).span(width)
        .height(4).graph_mode(BigValueGraphMode.AREA)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )  # fmt: skip
    if limits:
        panel.thresholds(_threshold_lines(limits))
    _targets(panel, (query,))
    return panel


def states(title: str, description: str, *queries: prometheus.Dataquery, width: int = 24) -> statetimeline.Panel:
    """A state timeline: which value held when (the version each server serves, who holds the lock)."""
    panel = (
        statetimeline.Panel().title(title).description(description).datasource(DATASOURCE).span(width).height(6)
        .show_value(VisibilityMode.AUTO).merge_values(True)
    )  # fmt: skip
    _targets(panel, queries)
    return panel


def bars(title: str, description: str, query: prometheus.Dataquery, *, unit: str = "s", width: int = 12
         ) -> bargauge.Panel:  # fmt: skip
    panel = (
        bargauge.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit).span(width)
        .height(8).orientation(VizOrientation.HORIZONTAL)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )  # fmt: skip
    _targets(panel, (query,))
    return panel


def quantiles(metric: str, by: str, legend: str) -> list[prometheus.Dataquery]:
    """p50 and p99 of a histogram, grouped `by` (which must keep `le`)."""
    return [
        q(f"histogram_quantile({p}, sum by ({by}) (rate({metric}_bucket[{RATE}])))", f"p{int(p * 100)} {legend}")
        for p in (0.5, 0.99)
    ]


def _board(uid: str, title: str, description: str, items: list[Builder[Any]]) -> dashboard.Dashboard:
    """A dashboard of `items` (panels, and rows that start a titled section), laid out left to right."""
    board = (
        dashboard.Dashboard(title).uid(uid).description(description).tags(["sleepd"]).editable()
        .refresh("30s").time("now-6h", "now").timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )  # fmt: skip
    for item in items:
        if isinstance(item, dashboard.Row):
            board.with_row(item)
        else:
            board.with_panel(item)
    return board


def serving() -> dashboard.Dashboard:
    about = "Requests, latency and TTFT, tokens, errors, vLLM's queue and KV cache."
    return _board("sleepd-serving", "sleepd / Serving", about, [
        dashboard.Row("Traffic"),
        graph("Requests / s by endpoint and status", "Every API request, by endpoint and HTTP status.",
              q(f"sum by (endpoint, status) (rate(sleepd_requests_total[{RATE}]))", "{{endpoint}} {{status}}"),
              unit="reqps"),
        graph("Errors / s by status", "Responses with a 4xx or 5xx status, by endpoint.",
              q(f'sum by (status, endpoint) (rate(sleepd_requests_total{{status=~"[45].."}}[{RATE}]))',
                "{{status}} {{endpoint}}"), unit="reqps"),
        graph("Tokens / s", "Prompt and completion tokens (sleepd's count, and vLLM's).",
              q(f"sum by (kind) (rate(sleepd_tokens_total[{RATE}]))", "sleepd {{kind}}"),
              q(f"sum(rate(vllm:generation_tokens_total[{RATE}]))", "vLLM generation"),
              q(f"sum(rate(vllm:prompt_tokens_total[{RATE}]))", "vLLM prompt"), unit="short"),
        graph("Engine ready", "sleepd_engine_ready per server: 0 while vLLM loads or after it failed.",
              q("sleepd_engine_ready", "{{instance}}"), limits=[(1, "green")]),
        graph("Requests / s by tenant and consent", "Requests with an API key, by the key's tenant and what may be "
              "done with the exchange: learn, audit (logged, never learned) or drop (not logged).",
              q(f"sum by (tenant, consent) (rate(sleepd_tenant_requests_total[{RATE}]))", "{{tenant}} {{consent}}"),
              unit="reqps"),
        graph("Refused API keys / s", "401s on /v1: no key, or an unknown or revoked one.",
              q(f"sum by (code) (rate(sleepd_auth_refused_total[{RATE}]))", "{{code}}"), unit="reqps"),
        dashboard.Row("Latency"),
        graph("Request latency p50 / p99 by endpoint", "End to end, from the first byte in to the last out.",
              *quantiles("sleepd_request_latency_seconds", "le, endpoint", "{{endpoint}}"), unit="s"),
        graph("Time to first token p50 / p99 by endpoint", "Streamed requests only.",
              *quantiles("sleepd_time_to_first_token_seconds", "le, endpoint", "{{endpoint}}"), unit="s"),
        graph("Time to first token p50 / p99 by adapter", "Streamed requests, by the adapter version that served "
              "each one ('base': no adapter), all servers together.",
              *quantiles("sleepd_time_to_first_token_seconds", "le, version", "{{version}}"), unit="s"),
        graph("Request latency p50 / p99 by adapter", "End to end, by the version that served each request "
              "('none': refused before a version was chosen).",
              *quantiles("sleepd_request_latency_seconds", "le, version", "{{version}}"), unit="s"),
        dashboard.Row("vLLM engine"),
        graph("vLLM: running / waiting requests", "The engine's scheduler queue, per server.",
              q("sum by (instance) (vllm:num_requests_running)", "running {{instance}}"),
              q("sum by (instance) (vllm:num_requests_waiting)", "waiting {{instance}}")),
        graph("vLLM: KV cache usage", "Share of the KV cache blocks in use (1 = full: requests queue).",
              q("max by (instance) (vllm:kv_cache_usage_perc)", "{{instance}}"), unit="percentunit",
              limits=[(0.9, "orange")]),
        graph("vLLM: preemptions / s", "Requests preempted for lack of KV cache.",
              q(f"sum by (instance) (rate(vllm:num_preemptions_total[{RATE}]))", "{{instance}}")),
        graph("vLLM: TTFT p99 (engine side)", "vLLM's own time to first token, without sleepd's HTTP layer.",
              q(f"histogram_quantile(0.99, sum by (le, instance) "
                f"(rate(vllm:time_to_first_token_seconds_bucket[{RATE}])))", "{{instance}}"), unit="s"),
    ])  # fmt: skip


def adapters() -> dashboard.Dashboard:
    return _board(
        "sleepd-adapters", "sleepd / Adapters", "Which version each server serves, skew, swaps, rejections, drain.", [
        states("Active version per server", "sleepd_active_adapter_info: the version each API server serves.",
               q("max by (instance, version) (sleepd_active_adapter_info == 1)", "{{instance}}: {{version}}")),
        single("Versions served", "Distinct versions the servers serve now: more than 1 is skew (the "
               "ServersDisagreeOnVersion alert).",
               q("count(count by (version) (sleepd_active_adapter_info == 1))"),
               limits=[(2, "red")]),
        single("Servers skewed", "Servers serving another version than the pointer (sleepd_adapter_skew).",
               q("sum(sleepd_adapter_skew)"), limits=[(1, "red")]),
        single("Served merged", "Servers whose new requests run on merged weights (no LoRA).",
               q("sum(sleepd_adapter_serving_merged)")),
        single("Adapters loaded", "Versions loaded in the engines (active + draining), all servers.",
               q("sum(sleepd_adapters_loaded)")),
        single("Leases in flight", "Requests holding a version (they keep a replaced one loaded).",
               q("sum(sleepd_adapter_leases)")),
        single("Drain revoked (24 h)", "Requests ended because they outlived their version's drain deadline.",
               q("sum(increase(sleepd_adapter_drain_revoked_total[24h]))"), limits=[(1, "orange")]),
        graph("Skew per server", "1 while a server serves another version than the pointer says.",
              q("sleepd_adapter_skew", "{{instance}}"), limits=[(1, "red")]),
        graph("Swaps by outcome", "Activations per interval.",
              q(f"sum by (outcome) (increase(sleepd_adapter_swaps_total[{RATE}]))", "{{outcome}}")),
        graph("Rejections by reason", "Versions refused (corrupt, incompatible, load error).",
              q(f"sum by (reason) (increase(sleepd_adapter_rejections_total[{RATE}]))", "{{reason}}")),
        graph("Load retries", "Failed loads of the pointer's version that will be retried.",
              q(f"sum by (instance) (increase(sleepd_adapter_load_retries_total[{RATE}]))", "{{instance}}")),
        graph("Drain: leases, loaded versions, revoked", "How replaced versions drain.",
              q("sum by (instance) (sleepd_adapter_leases)", "leases {{instance}}"),
              q("sum by (instance) (sleepd_adapters_loaded)", "loaded {{instance}}"),
              q(f"sum by (instance) (increase(sleepd_adapter_drain_revoked_total[{RATE}]))",
                "revoked {{instance}}")),
        graph("Load and merge time p50 / p99", "Verify + load + warm-up; activation -> merged weights.",
              *quantiles("sleepd_adapter_load_seconds", "le", "load"),
              *quantiles("sleepd_adapter_merge_seconds", "le", "merge"), unit="s"),
        graph("Merges by outcome", "Merges of the active version into the weights.",
              q(f"sum by (outcome) (increase(sleepd_adapter_merges_total[{RATE}]))", "{{outcome}}")),
    ])  # fmt: skip


def sleep() -> dashboard.Dashboard:
    return _board(
        "sleepd-sleep", "sleepd / Sleep", "Sleep cycles: outcomes, phases, the gate, pending sessions, the window.", [
        single("Running", "Cycles running now.", q('max(sleepd_sleep_cycles{state="running"})')),
        single("Queued", "Cycles waiting for a worker.", q('max(sleepd_sleep_cycles{state="queued"})')),
        single("Window open", "1 when traffic, window, GPU and pending tokens allow a sleep.",
               q("max(sleepd_sleep_window_open)"), limits=[(1, "blue")]),
        single("GPU idle", "1 when the GPU is idle enough to train (1 without a GPU).",
               q("min(sleepd_gpu_idle)")),
        single("Pending sessions", "Logged exchanges not yet consolidated.",
               q("max(sleepd_sleep_pending_records)")),
        single("Pending tokens", "Tokens of those exchanges (a scheduled sleep needs "
               f"SLEEPD_SLEEP_MIN_PENDING_TOKENS, {MIN_PENDING_TOKENS} by default).",
               q("max(sleepd_sleep_pending_tokens)"), limits=[(MIN_PENDING_TOKENS, "blue")]),
        single("Workers alive", "Sleep workers whose heartbeat is under 90 s old.",
               q("max(sleepd_sleep_workers)"), limits=[(1, "green")]),
        single("Failures in a row", "Consecutive failed cycles; the scheduler backs off, and stops at "
               f"SLEEPD_SLEEP_MAX_FAILURES ({MAX_FAILURES} by default).", q("max(sleepd_sleep_consecutive_failures)"),
               limits=[(1, "orange"), (MAX_FAILURES, "red")]),
        single("Gate rejections", "Gate rejections of the pending sessions since the watermark last moved.",
               q("max(sleepd_sleep_gate_rejections)"), limits=[(2, "orange")]),
        single("Since last publish", "Time since a cycle last published an adapter.",
               q("time() - max(sleepd_sleep_last_published_timestamp_seconds) "
                 "and max(sleepd_sleep_last_published_timestamp_seconds) > 0"), unit="s"),
        single("Scheduler decision age", "Age of the scheduler's latest decision (a stale one: no scheduler).",
               q("max(sleepd_sleep_decision_age_seconds)"), unit="s", limits=[(300, "orange")]),
        single("Scheduler stopped", "1 after SLEEPD_SLEEP_MAX_FAILURES failures in a row: force a cycle.",
               q("max(sleepd_sleep_stopped)"), limits=[(1, "red")]),
        graph("Cycles by outcome", "Cycles ended in each state (all time), and queued or running now.",
              q("max by (state) (sleepd_sleep_cycles)", "{{state}}")),
        states("Current phase", "The phase of the cycle running now.",
               q("max by (phase) (sleepd_sleep_phase) > 0", "{{phase}}"), width=12),
        states("Why the window is closed", "Each reason the scheduler does not start a cycle now.",
               q("max by (reason) (sleepd_sleep_window_blocked) > 0", "{{reason}}"), width=12),
        states("Sleep lock holder", "Who holds the sleep lock (one cycle at a time): the running cycle.",
               q("max by (holder) (sleepd_sleep_lock_held) > 0", "{{holder}}"), width=12),
        bars("Phase durations, latest cycle", "Seconds per phase of the latest published or rejected cycle.",
                         q("max by (phase) (sleepd_sleep_last_phase_seconds)", "{{phase}}")),
        graph("Phase durations over time", "Each cycle's phases, as they changed.",
              q("max by (phase) (sleepd_sleep_last_phase_seconds)", "{{phase}}"), unit="s"),
        graph("Gate: recall before / after, per version", "Closed-book recall on held-out questions, for each "
              "version a cycle built ('rejected-on-vN': a candidate the gate refused). A cycle passes when after - "
              "before > SLEEPD_GATE_MIN_RECALL_GAIN.",
              q('max by (metric, version) (sleepd_sleep_last_gate{metric=~"recall_before|recall_after"})',
                "{{metric}} {{version}}"), unit="percentunit"),
        graph("Gate: drift against thresholds, per version", "KL against the previous version and the original "
              "base for each version a cycle built, beside the configured limits (SLEEPD_GATE_MAX_ANCHOR_KL, "
              "SLEEPD_GATE_MAX_BASE_KL).",
              q('max by (metric, version) (sleepd_sleep_last_gate{metric=~"anchor_kl|base_kl"})',
                "{{metric}} {{version}}"),
              q('max by (metric) (sleepd_sleep_gate_threshold{metric=~"max_anchor_kl|max_base_kl"})',
                "limit {{metric}}")),
        graph("Pending sessions and tokens", "What the next sleep would learn from.",
              q("max(sleepd_sleep_pending_records)", "exchanges"),
              q("max(sleepd_sleep_pending_tokens)", "tokens")),
        graph("Window and GPU", "Why no sleep starts: the window (traffic, hours, pending tokens, GPU) "
              "and the GPU alone.",
              q("max(sleepd_sleep_window_open)", "window open"), q("min(sleepd_gpu_idle)", "GPU idle")),
        dashboard.Row("Celery (Flower)"),
        graph("Celery workers online", "Per worker, as Flower sees it from Celery's events (`sleepd flower`).",
              q("max by (worker) (flower_worker_online)", "{{worker}}"), limits=[(1, "green")]),
        graph("Celery task events / s", "Celery's task events by type (received, started, succeeded, failed, "
              "retried) and task, from Flower.",
              q(f"sum by (type, task) (rate(flower_events_total[{RATE}]))", "{{type}} {{task}}"), unit="ops"),
        graph("Celery task runtime, mean", "Mean runtime of each Celery task since Flower started (a sleep "
              "cycle, an erasure, the scheduler's check). A mean, not a rate-based quantile: sleeps run a few "
              "times a day, too rarely for a rate window.",
              q("sum by (task) (flower_task_runtime_seconds_sum) / sum by (task) (flower_task_runtime_seconds_count)",
                "{{task}}"), unit="s"),
    ])  # fmt: skip


def session_log() -> dashboard.Dashboard:
    return _board(
        "sleepd-session-log", "sleepd / Session log", "The exchange log: Redis, the in-memory queue, the spool.", [
        single("Redis up (min over servers)", "0 while a server's session log cannot reach Redis.",
               q("min(sleepd_redis_up)"), limits=[(1, "green")]),
        single("Spool pending", "Records in the local spools awaiting Redis.",
               q("sum(sleepd_session_log_spool_pending)"), limits=[(1, "orange")]),
        single("Queue depth", "Records waiting in memory for the log writers.",
               q("sum(sleepd_session_log_queue_depth)")),
        single("Write p99", "One batch stored in Redis.",
               q(f"histogram_quantile(0.99, sum by (le) (rate(sleepd_session_log_write_seconds_bucket[{RATE}])))"),
               unit="s"),
        graph("Records / s by outcome", "redis, spooled, replayed (spool to Redis), duplicate.",
              q(f"sum by (outcome) (rate(sleepd_session_log_records_total[{RATE}]))", "{{outcome}}")),
        graph("Redis up per server", "1 while the server's log writer reaches Redis.",
              q("sleepd_redis_up", "{{instance}}"), limits=[(1, "green")]),
        graph("Queue and spool per server", "A growing spool means Redis is away or refuses writes.",
              q("sleepd_session_log_queue_depth", "queue {{instance}}"),
              q("sleepd_session_log_spool_pending", "spool {{instance}}")),
        graph("Write latency p50 / p99", "Time to store one batch (one pipelined round trip).",
              *quantiles("sleepd_session_log_write_seconds", "le", ""), unit="s"),
    ])  # fmt: skip


BOARDS = {"serving": serving, "adapters": adapters, "sleep": sleep, "session-log": session_log}


def render(board: dashboard.Dashboard) -> str:
    """The dashboard as Grafana's JSON model, stable (sorted keys) so regenerating gives the same bytes."""
    return json.dumps(json.loads(json.dumps(board.build(), cls=JSONEncoder)), indent=2, sort_keys=True) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text, for every dashboard."""
    return {f"sleepd-{name}.json": render(build()) for name, build in BOARDS.items()}


def main(out_dir: Path = OUT_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = generate()
    for stale in set(p.name for p in out_dir.glob("*.json")) - set(files):
        (out_dir / stale).unlink()
    for name, text in files.items():
        (out_dir / name).write_text(text)
        print(f"wrote {out_dir / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR)
