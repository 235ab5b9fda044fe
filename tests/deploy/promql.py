"""What metrics the code defines, and a check that a PromQL expression names only those (and their labels).

Defined metrics come from the metric objects themselves: app/metrics.py and app/sleep_metrics.py are imported and
every prometheus_client metric in them is read (name, type, label names). `every_metrics_module()` finds, by
parsing the code, each module that builds a metric, so a new one cannot slip past the check. vLLM's `vllm:*`
metrics are checked against the names in the installed vLLM's source when vLLM is installed (they are served from
the same /metrics), and allowed by their prefix where it is not.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
METRICS_MODULES = ("app.metrics", "app.sleep_metrics")
CODE_DIRS = ("app", "worker", "sleepd", "consolidation")
_METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
# Prometheus adds these to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# What each metric type exposes beyond its base name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
}
_VLLM_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
# Grafana's variables, replaced by a value of the same kind before parsing.
_GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}


@dataclass(frozen=True)
class Defined:
    """Series names the code exposes -> the labels each carries (without the target's job/instance)."""

    series: dict[str, frozenset[str]] = field(default_factory=dict)
    vllm: frozenset[str] | None = None  # base names in the installed vLLM; None: vLLM absent, prefix allowed


@cache
def defined_metrics() -> Defined:
    # Flower's (`sleepd flower`: Celery's workers, queue and tasks), built by the installed Flower itself.
    from flower.events import get_prometheus_metrics

    metrics = [obj for name in METRICS_MODULES for obj in vars(importlib.import_module(name)).values()]
    metrics += list(vars(get_prometheus_metrics()).values())
    series: dict[str, frozenset[str]] = {}
    for obj in metrics:
        if isinstance(obj, MetricWrapperBase):
            # prometheus_client keeps name, type and label names on the metric object (read-only here).
            base, kind, labels = obj._name, str(obj._type), frozenset(obj._labelnames)
            for suffix in _SUFFIXES[kind]:
                series[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return Defined(series, vllm_metric_names())


def vllm_metric_names() -> frozenset[str] | None:
    """`vllm:*` names written in the installed vLLM's source (found without importing vLLM, which is slow)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    names: set[str] = set()
    for root in spec.submodule_search_locations:
        for path in Path(root).rglob("*.py"):
            text = path.read_text(encoding="utf-8", errors="replace")
            if '"vllm:' in text:
                names.update(re.findall(r'"(vllm:[a-z0-9_]+)"', text))
    return frozenset(names)


def every_metrics_module() -> set[str]:
    """Modules (dotted) under the code folders that construct a prometheus_client metric, found by parsing."""
    found = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            imported = {
                alias.asname or alias.name
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prometheus_client")
                for alias in node.names
                if alias.name in _METRIC_CLASSES
            }
            if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in imported
                   for n in ast.walk(tree)):  # fmt: skip
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def parse(expr: str) -> Any:
    for var, value in _GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return promql_parser.parse(expr)


def _name(selector: Any) -> str:
    if selector.name:
        return str(selector.name)
    return next((m.value for m in selector.matchers.matchers if m.name == "__name__"), "")


def _selectors(expr: Any) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, visit)
    return found


def _labels_under(expr: Any, defined: Defined) -> frozenset[str] | None:
    """Labels the series of `expr` can carry; None when unknown (a vLLM metric: its labels are vLLM's)."""
    labels: set[str] = set(TARGET_LABELS)
    for selector in _selectors(expr):
        name = _name(selector)
        if name not in defined.series:
            return None
        labels |= defined.series[name]
    return frozenset(labels)


def _vllm_base(name: str) -> str:
    for suffix in _VLLM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check(expr: str, defined: Defined, allowed_extra: Iterable[str] = ()) -> list[str]:
    """Problems with `expr`: unknown metrics, labels a metric does not carry, grouping by labels none carries.
    `allowed_extra` names metrics accepted without their labels being known (those NEEDED_METRICS.md asks for)."""
    extra = set(allowed_extra)
    try:
        tree = parse(expr)
    except ValueError as exc:
        return [f"does not parse: {exc}"]
    problems: list[str] = []
    known = Defined({**defined.series}, defined.vllm)

    for selector in _selectors(tree):
        name = _name(selector)
        if name.startswith("vllm:"):
            if defined.vllm is not None and name not in defined.vllm and _vllm_base(name) not in defined.vllm:
                problems.append(f"{name}: not a metric of the installed vLLM")
            continue
        if name in extra:
            continue
        if name not in defined.series:
            problems.append(f"{name}: no such metric in {', '.join(METRICS_MODULES)}")
            continue
        for matcher in selector.matchers.matchers:
            if matcher.name != "__name__" and matcher.name not in defined.series[name] | TARGET_LABELS:
                problems.append(f"{name}{{{matcher.name}}}: {name} has no label {matcher.name!r}")
    if problems:
        return problems

    def visit(node: Any) -> None:
        groups: list[tuple[list[str], frozenset[str] | None]] = []
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            if str(node.modifier.type).endswith("By"):
                groups.append((list(node.modifier.labels), _labels_under(node.expr, known)))
        if isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            names = list(node.modifier.group_labels or [])
            if node.modifier.matching is not None and str(node.modifier.matching.type).endswith("Include"):
                names += list(node.modifier.matching.labels)
            lhs, rhs = _labels_under(node.lhs, known), _labels_under(node.rhs, known)
            groups.append((names, None if lhs is None or rhs is None else lhs | rhs))
        for names, available in groups:
            if available is None:
                continue
            problems.extend(f"by/on {label!r}: no metric in the expression carries it"
                            for label in names if label not in available)  # fmt: skip

    promql_parser.walk(tree, visit)
    return problems
