"""One sleep cycle on one page: what it cost, what the gate saw, what it learned, where it sits in the lineage.

Built from the job record (sleepd.jobs) and the tenant's adapter listing (the registry's metadata), so the admin
API (HTML) and the CLI (terminal) show the same thing. Pure: no Redis, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2

# Gate checks as (metric, limit, which side passes, label). The limits come from the job (what the gate was judged
# against then), not from today's settings.
_CHECKS = (
    ("recall_after", "min_recall_gain", "gain", "closed-book recall of held-out probes"),
    ("anchor_kl", "max_anchor_kl", "max", "anchor drift KL against the previous version"),
    ("base_kl", "max_base_kl", "max", "anchor drift KL against the original base"),
    ("anchor_unchanged", "min_anchor_unchanged", "min", "anchor answers unchanged"),
)


@dataclass
class Phase:
    name: str
    seconds: float
    cpu_s: float | None
    share: float  # of the longest phase: the bar's length


@dataclass
class Check:
    label: str
    value: float
    limit: float  # where the gauge marks the threshold
    rule: str  # "<= limit", ">= limit", "> before + limit"
    ok: bool


@dataclass
class Ancestor:
    version: str
    created_at: str
    sessions: int
    facts: int
    recall: str
    anchor_kl: str
    this: bool


@dataclass
class SleepReportView:
    job_id: str
    state: str
    tenant: str
    version: str | None
    parent: str | None
    started: str
    reasons: list[str]
    error: str | None
    now: str | None  # a cycle still running: its phase and progress
    phases: list[Phase] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    earlier: list[dict[str, Any]] = field(default_factory=list)  # earlier facts' probes the lineage recalled
    lineage: list[Ancestor] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def learned(self) -> str:
        return f"{sum(p['after_ok'] for p in self.probes)}/{len(self.probes)}"

    @property
    def known_before(self) -> str:
        return f"{sum(p['before_ok'] for p in self.probes)}/{len(self.probes)}"


def _when(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        return "-"


def build(job: dict[str, Any], adapters: list[dict[str, Any]]) -> SleepReportView:
    """`job`: GET /admin/sleep/{id}; `adapters`: GET /admin/adapters (the job's tenant)."""
    report: dict[str, Any] = job["report"] if isinstance(job.get("report"), dict) else {}
    gate = report.get("gate") or {}
    options = job.get("options") or {}
    version = report.get("version") or report.get("published")
    parent = report.get("parent")
    view = SleepReportView(
        job_id=str(job.get("job_id", "?")), state=str(job.get("state", "?")),
        tenant=str(options.get("tenant", "default")), version=version, parent=parent,
        started=_when(job.get("started_at") or job.get("created_at")),
        reasons=list(gate.get("reasons") or []), error=job.get("error"),
        now=f"{job.get('phase')} {100 * float(job.get('progress') or 0):.0f}%" if job.get("state") == "running"
        else None,
    )  # fmt: skip
    if report.get("erased"):
        view.reasons = ["this cycle's version was purged by an erasure: its report is gone with it"]
    # Phase timings: the worker's wall clock per phase (job "phases"), CPU seconds from the sleep's own clock.
    walls = {k: float(v) for k, v in (job.get("phases") or report.get("timings_s") or {}).items()}
    cpu = report.get("cpu_s") or {}
    longest = max(walls.values(), default=0.0) or 1.0
    view.phases = [Phase(k, round(v, 1), cpu.get(k), v / longest) for k, v in walls.items()]
    limits = gate.get("limits") or {}
    for metric, limit_key, side, label in _CHECKS:
        if metric not in gate or limit_key not in limits:
            continue
        value, limit = float(gate[metric]), float(limits[limit_key])
        if side == "gain":
            before = float(gate.get("recall_before", 0))
            view.checks.append(Check(f"{label} (before {before:.2f})", value, before + limit,
                                     f"> {before:.2f} + {limit:g}", value - before > limit))  # fmt: skip
        elif side == "max":
            view.checks.append(Check(label, value, limit, f"<= {limit:g}", value <= limit))
        else:
            view.checks.append(Check(label, value, limit, f">= {limit:g}", value >= limit))
    known, kept = int(gate.get("stored_known") or 0), int(gate.get("stored_kept") or 0)
    if known and "min_stored_kept" in limits:  # retention: nothing to check before a lineage stores facts
        limit, allowed = float(limits["min_stored_kept"]), int(gate.get("stored_allowed") or 0)
        view.checks.append(Check(f"earlier facts' probes still answered ({kept} of {known}, {allowed} loss allowed)",
                                 kept / known, limit, f">= {limit:g} or <= {allowed} lost",
                                 known - kept <= allowed))  # fmt: skip
    view.probes = [p for p in report.get("probes") or [] if isinstance(p, dict)]
    # Lost ones first: they are why a retention refusal happened.
    view.earlier = sorted((p for p in report.get("earlier") or [] if isinstance(p, dict)),
                          key=lambda p: bool(p.get("after_ok")))  # fmt: skip
    view.lineage = _lineage(version or parent, adapters, version)
    view.totals = {
        "sessions": report.get("sessions"), "statements": report.get("statements"),
        "targets": report.get("targets"), "session_tokens": report.get("session_tokens"),
        "stored_facts": report.get("stored_facts"),
        "wall_s": round(sum(walls.values()), 1) if walls else None,
        "cpu_s_per_1k": round(sum((report.get("cpu_s_per_1k_session_tokens") or {}).values()), 1) or None,
    }  # fmt: skip
    return view


def _lineage(tip: str | None, adapters: list[dict[str, Any]], this: str | None) -> list[Ancestor]:
    """From `tip` back to the base, newest first."""
    by_version = {a["version"]: a for a in adapters if "version" in a}
    out: list[Ancestor] = []
    seen: set[str] = set()
    while tip and tip in by_version and tip not in seen:
        seen.add(tip)
        meta = by_version[tip]
        lineage, gate = meta.get("lineage") or {}, meta.get("gate") or {}
        out.append(Ancestor(
            tip, _when(meta.get("created_at")), len(lineage.get("sessions", [])), len(lineage.get("facts", [])),
            f"{gate['recall_before']:.2f} -> {gate['recall_after']:.2f}" if "recall_after" in gate else "-",
            f"{gate['anchor_kl']:.3f}" if "anchor_kl" in gate else "-", tip == this,
        ))  # fmt: skip
        tip = meta.get("parent")
    return out


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sleepd", "templates"), autoescape=True,  # session text is user input
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    return env.get_template("sleep_report.html.j2")


def render_html(view: SleepReportView) -> str:
    return _template().render(r=view)
