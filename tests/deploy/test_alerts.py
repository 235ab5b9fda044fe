"""The alert rules: promtool's unit tests pass (and fail when a rule is broken), every alert has a case that fires
and one that does not, and every expression names metrics the code defines or NEEDED_METRICS.md asks for."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import ROOT, check, defined_metrics

PROM = ROOT / "deploy" / "prometheus"
TEST_FILES = ("alerts_test.yml", "alerts_days_test.yml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus'; scripts/test installs it)"
)
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = ("up",)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for rule in group["rules"]]


def needed_metrics() -> set[str]:
    """New metric names NEEDED_METRICS.md asks for (rows whose first cell is one name and whose type is new)."""
    names = set()
    for line in (ROOT / "deploy" / "NEEDED_METRICS.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 1 and re.fullmatch(r"`sleepd_[a-z0-9_]+`", cells[0]) and "existing" not in cells[1]:
            names.add(cells[0].strip("`"))
    return names


def _promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", *TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_prometheus_configs_and_their_rules_are_valid() -> None:
    for config in ("prometheus.yml", "prometheus-compose.yml"):
        result = _promtool("check", "config", config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "alerts.yml" in result.stdout, f"{config} does not load the alert rules"


@needs_promtool
@pytest.mark.parametrize(
    ("rule", "broken"),
    [
        ("RedisDown", ("sleepd_redis_up == 0", "sleepd_redis_up == 1")),  # wrong condition
        ("ServersDisagreeOnActiveVersion", ("> 1\n", "> 0\n")),  # fires on a single version
        ("SleepLockHeldTooLong", ("for: 3h10m", "for: 1h")),  # fires during normal cycles
    ],
)
def test_a_broken_rule_fails_its_unit_test(tmp_path: Path, rule: str, broken: tuple[str, str]) -> None:
    for name in ("alerts.yml", TEST_FILES[0]):
        shutil.copy(PROM / name, tmp_path / name)
    text = (tmp_path / "alerts.yml").read_text()
    start = text.index(f"- alert: {rule}\n")
    end = text.find("- alert:", start + 1)
    end = len(text) if end < 0 else end
    block = text[start:end]
    assert broken[0] in block
    (tmp_path / "alerts.yml").write_text(text[:start] + block.replace(broken[0], broken[1], 1) + text[end:])
    result = _promtool("test", "rules", TEST_FILES[0], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and f"alertname: {rule}," in output, output


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases: dict[str, set[bool]] = {}
    for name in TEST_FILES:
        for test in yaml.safe_load((PROM / name).read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    missing = {r["alert"]: cases.get(r["alert"], set()) for r in _rules() if cases.get(r["alert"]) != {True, False}}
    assert not missing, f"alerts without both a firing and a quiet case (what they have: True=fires): {missing}"


def test_alert_expressions_name_defined_or_needed_metrics() -> None:
    defined = defined_metrics()
    allowed = needed_metrics() | set(PROMETHEUS_SERIES)
    problems = [f"{r['alert']}: {p}" for r in _rules() for p in check(r["expr"], defined, allowed)]
    assert not problems, "\n".join(problems)


def test_needed_metrics_are_still_needed() -> None:
    """Once the code defines one, NEEDED_METRICS.md and the rules' `needs:` comments are stale."""
    needed = needed_metrics()
    assert "| metric | type |" in (ROOT / "deploy" / "NEEDED_METRICS.md").read_text(), "the table is gone: parse error?"
    done = needed & set(defined_metrics().series)
    assert not done, f"{done} are defined now: remove them from NEEDED_METRICS.md and their 'needs:' comments"
    rules_text = (PROM / "alerts.yml").read_text()
    for name in re.findall(r"# needs: (sleepd_[a-z0-9_]+)", rules_text):
        assert name in needed, f"alerts.yml says it needs {name}, which NEEDED_METRICS.md does not list"
