"""The Grafana dashboards: generated from deploy/grafana/dashboards.py, committed as generated, and querying only
metrics (and labels) that the code defines. No Grafana, Prometheus or sleepd needed."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.promql import METRICS_MODULES, ROOT, check, defined_metrics, every_metrics_module

GRAFANA = ROOT / "deploy" / "grafana"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sleepd_dashboards", GRAFANA / "dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return _generator().generate()


def _queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def test_committed_dashboards_are_the_generated_ones(generated: dict[str, str]) -> None:
    committed = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert set(committed) == set(generated), "run: python deploy/grafana/dashboards.py"
    stale = [name for name, text in generated.items() if committed[name] != text]
    assert not stale, f"{stale} differ from the generator's output; run: python deploy/grafana/dashboards.py"


def test_the_four_dashboards_exist_with_unique_uids(generated: dict[str, str]) -> None:
    boards = [json.loads(text) for text in generated.values()]
    assert {b["title"] for b in boards} == {f"sleepd / {t}" for t in ("Serving", "Adapters", "Sleep", "Session log")}
    assert len({b["uid"] for b in boards}) == len(boards)
    for board in boards:
        ids = [p.get("refId") for p in board["panels"] for p in p.get("targets", [])]
        assert ids and all(ids), f"{board['title']}: a query without refId"
        assert all(p["datasource"]["uid"] == "prometheus" for p in board["panels"] if p["type"] != "row")


def test_every_metrics_module_is_checked() -> None:
    """A module that defines metrics but is not imported by the check would let its names go unchecked."""
    assert every_metrics_module() == set(METRICS_MODULES)


def test_every_panel_queries_defined_metrics_and_labels(generated: dict[str, str]) -> None:
    defined = defined_metrics()
    problems = [
        f"{name} / {title}: {expr}\n    {problem}"
        for name, text in generated.items()
        for title, expr in _queries(json.loads(text))
        for problem in check(expr, defined)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("rate(sleepd_no_such_thing_total[5m])", "no such metric"),
        ("sleepd_requests_total_bucket", "no such metric"),  # a counter has no buckets
        ('sleepd_adapter_skew{version="v1"}', "has no label"),
        ("sum by (adapter) (rate(sleepd_requests_total[5m]))", "no metric in the expression carries it"),
        ("sleepd_redis_up * on (version) group_left sleepd_engine_ready", "no metric in the expression carries it"),
        ("vllm:no_such_metric", "installed vLLM"),
        ("sum(rate(sleepd_requests_total[5m]", "does not parse"),
    ],
)
def test_the_check_refuses_what_the_code_does_not_define(expr: str, why: str) -> None:
    defined = defined_metrics()
    if "vllm:" in expr and defined.vllm is None:
        pytest.skip("vLLM is not installed: vllm:* names are allowed by their prefix")
    problems = check(expr, defined)
    assert any(why in p for p in problems), problems


def test_the_check_accepts_histogram_series_and_target_labels() -> None:
    series = 'sleepd_request_latency_seconds_bucket{job="sleepd"}'
    expr = f"histogram_quantile(0.99, sum by (le, instance) (rate({series}[5m])))"
    assert check(expr, defined_metrics()) == []


def test_provisioning_points_grafana_at_the_dashboards_and_the_datasource() -> None:
    prov = GRAFANA / "provisioning"
    sources = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert [(s["type"], s["uid"]) for s in sources] == [("prometheus", "prometheus")]
    providers = yaml.safe_load((prov / "dashboards" / "sleepd.yaml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards/sleepd"]
