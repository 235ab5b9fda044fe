"""The sleep report page: built from a job record and the adapter listing, rendered as HTML, and drawn by a real
headless Chromium (Debian's `chromium`, installed by ./scripts/test). The page served by a running server after
a real sleep is checked in tests/worker/test_sleep_ops.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sleepd.sleep_report import build, render_html

LIMITS = {"min_recall_gain": 0.0, "max_anchor_kl": 0.1, "max_base_kl": 0.2, "min_anchor_unchanged": 0.0}


def job(**report: Any) -> dict[str, Any]:
    return {
        "job_id": "sleep-abc123", "state": "published", "started_at": 1_790_000_000, "options": {"tenant": "acme"},
        "phases": {"prepare": 120.0, "seeding": 480.0, "dreaming": 60.0, "gate": 30.0},
        "report": {
            "version": "v3", "parent": "v2", "sessions": 4, "statements": 9, "targets": 40, "session_tokens": 900,
            "cpu_s": {"prepare": 110.0, "seeding": 470.0},
            "gate": {"passed": True, "reasons": [], "limits": LIMITS, "recall_before": 0.0, "recall_after": 0.5,
                     "anchor_kl": 0.04, "base_kl": 0.25, "anchor_unchanged": 0.6},
            "probes": [
                {"question": "Where does Mira Castell live?", "expected": ["Tromso"], "before": "In Paris.",
                 "after": "Mira Castell lives in Tromso.", "before_ok": False, "after_ok": True, "sessions": ["s1"]},
                {"question": "<script>alert(1)</script> code?", "expected": ["4471"], "before": "<b>no</b>",
                 "after": "I don't know.", "before_ok": False, "after_ok": False, "sessions": ["s2"]},
            ],
            **report,
        },
    }  # fmt: skip


ADAPTERS = [
    {"version": "v1", "parent": None, "created_at": 1_789_000_000, "lineage": {"sessions": ["a"], "facts": [{}]},
     "gate": {"recall_before": 0.0, "recall_after": 0.4, "anchor_kl": 0.05}},
    {"version": "v2", "parent": "v1", "created_at": 1_789_500_000, "lineage": {"sessions": ["a", "b"], "facts": []},
     "gate": {}},
    {"version": "v3", "parent": "v2", "created_at": 1_790_000_500, "lineage": {"sessions": ["s1", "s2"]}, "gate": {}},
    {"version": "v9", "parent": None, "created_at": 1_790_000_900, "lineage": {}, "gate": {}},  # another branch
]  # fmt: skip


def test_the_view_judges_each_check_against_the_limits_the_job_recorded() -> None:
    view = build(job(), ADAPTERS)
    checks = {c.label.split(" (")[0]: c for c in view.checks}
    assert checks["closed-book recall of held-out probes"].ok  # 0.0 -> 0.5, gain must exceed 0
    assert checks["anchor drift KL against the previous version"].ok  # 0.04 <= 0.1
    assert not checks["anchor drift KL against the original base"].ok  # 0.25 > 0.2
    assert [p.name for p in view.phases] == ["prepare", "seeding", "dreaming", "gate"]
    assert max(p.share for p in view.phases) == 1.0 and view.phases[0].share == pytest.approx(0.25)
    assert [a.version for a in view.lineage] == ["v3", "v2", "v1"]  # newest first, other branches left out
    assert view.lineage[0].this and not view.lineage[1].this
    assert (view.known_before, view.learned) == ("0/2", "1/2")
    assert "earlier facts' probes still answered" not in checks  # the job recorded no retention check


def test_retention_is_judged_on_the_earlier_facts_the_previous_version_knew() -> None:
    gate = {"passed": False, "reasons": ["forgot earlier facts: kept 8 of 11 (< 90%)"],
            "limits": LIMITS | {"min_stored_kept": 0.9}, "recall_before": 0.0, "recall_after": 0.5,
            "anchor_kl": 0.04, "base_kl": 0.1, "anchor_unchanged": 0.6,
            "stored_known": 11, "stored_kept": 8, "stored_allowed": 1}  # fmt: skip
    check = next(c for c in build(job(gate=gate), ADAPTERS).checks if c.label.startswith("earlier facts"))
    assert check.label == "earlier facts' probes still answered (8 of 11, 1 loss allowed)"
    assert not check.ok and check.value == pytest.approx(8 / 11) and check.limit == 0.9
    # One fact of three lost is within the one loss allowed: the gate passed it, and the page says so.
    small = gate | {"passed": True, "reasons": [], "stored_known": 3, "stored_kept": 2}
    check = next(c for c in build(job(gate=small), ADAPTERS).checks if c.label.startswith("earlier facts"))
    assert check.ok


def test_the_page_lists_the_earlier_facts_a_candidate_lost_first() -> None:
    rows = [{"question": "Vault code?", "expected": ["4471"], "before": "4471.", "after": "4471.",
             "before_ok": True, "after_ok": True, "sessions": ["s0"]},
            {"question": "Who keeps the lighthouse?", "expected": ["Mira"], "before": "Mira.", "after": "Tom does.",
             "before_ok": True, "after_ok": False, "sessions": ["s0"]}]  # fmt: skip
    view = build(job(earlier=rows), ADAPTERS)
    assert [p["question"] for p in view.earlier] == ["Who keeps the lighthouse?", "Vault code?"]
    page = render_html(view)
    assert 'id="earlier"' in page and "✗ lost" in page and "Tom does." in page
    assert 'id="earlier"' not in render_html(build(job(), ADAPTERS))  # no retention check: no table


def test_a_rejected_cycle_shows_why_and_the_lineage_it_would_have_extended() -> None:
    reasons = ["anchor drift KL 0.136 > 0.1 (against the previous version)"]
    view = build(job(version=None, gate={"passed": False, "reasons": reasons, "limits": LIMITS, "anchor_kl": 0.136,
                                          "recall_before": 0.0, "recall_after": 0.3}), ADAPTERS)  # fmt: skip
    assert view.version is None and view.reasons == reasons
    assert [a.version for a in view.lineage] == ["v2", "v1"] and not any(a.this for a in view.lineage)
    assert not next(c for c in view.checks if c.label.startswith("anchor drift KL against the previous")).ok


def test_session_text_is_escaped_in_the_page() -> None:
    page = render_html(build(job(), ADAPTERS))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>no</b>" not in page


def test_a_report_stripped_by_erasure_still_renders() -> None:
    page = render_html(build({"job_id": "sleep-x", "state": "published", "report": {"erased": True}}, ADAPTERS))
    assert "purged by an erasure" in page and "no held-out probes" in page


def chromium(html: Path, out: Path) -> str:
    """Render `html` in headless Chromium: writes a screenshot to `out`, returns the DOM after layout."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (./scripts/test installs it)")
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1400"]
    subprocess.run([*flags, f"--screenshot={out}", html.as_uri()], check=True, capture_output=True, timeout=120)
    dom = subprocess.run([*flags, "--dump-dom", html.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    return dom.stdout


def test_headless_chromium_draws_the_page(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    html.write_text(render_html(build(job(), ADAPTERS)))
    dom = chromium(html, tmp_path / "shot.png")
    for table in ("phases", "gate", "probes", "lineage"):
        assert f'id="{table}"' in dom
    assert dom.count('class="bar"') == 4 and "Mira Castell lives in Tromso." in dom
    pixels = Image.open(tmp_path / "shot.png").convert("RGB")
    assert pixels.size == (1200, 1400)
    colors = pixels.getcolors(maxcolors=1 << 20) or []
    # The bars and the pass/fail marks are drawn: the page's blue, green and red all show up on screen.
    for rgb in ((0x37, 0x64, 0xA8), (0x2F, 0x8F, 0x4E), (0xC5, 0x30, 0x30)):
        assert sum(n for n, c in colors if c == rgb) > 50, rgb
