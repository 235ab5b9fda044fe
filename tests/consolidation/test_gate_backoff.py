"""The gate's drift back-off: a candidate refused for drift alone is scaled down once and judged again; what is
published is exactly the files the second judgement passed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from bench.learning import records_of
from consolidation.dreaming import DreamingConfig
from consolidation.experts import load_adapter
from consolidation.gate import GateConfig, GateReport
from consolidation.policy import ExpertConfig
from consolidation.seeding import SeedingConfig
from consolidation.sleep import SleepConfig, run_sleep
from sleepd.registry import BASE, AdapterRegistry

CFG = GateConfig()  # limits 0.1 against the previous version, 0.2 against the base; min_scale 0.85


def _report(**kw: float) -> GateReport:
    fields = {"recall_before": 0.0, "recall_after": 0.5, "anchor_kl": 0.05, "base_kl": 0.05,
              "anchor_unchanged": 0.5} | kw  # fmt: skip
    failed = fields["anchor_kl"] > CFG.max_anchor_kl or fields["base_kl"] > CFG.max_base_kl
    failed |= fields["recall_after"] - fields["recall_before"] <= CFG.min_recall_gain
    return GateReport(not failed, ["x"] if failed else [], 4, True, **fields)  # type: ignore[arg-type]


def test_back_off_scales_by_the_square_root_of_the_excess_when_drift_alone_refused() -> None:
    assert _report().backoff_scale(CFG) is None  # passed: nothing to do
    # 0.11 against a 0.1 limit: aim at 0.09, KL taken to grow with the square of the scale.
    assert _report(anchor_kl=0.11).backoff_scale(CFG) == pytest.approx((0.9 / 1.1) ** 0.5)
    assert _report(base_kl=0.24).backoff_scale(CFG) == pytest.approx((0.9 / 1.2) ** 0.5)  # the base limit too
    assert _report(anchor_kl=0.11, recall_after=0.0).backoff_scale(CFG) is None  # recall failed as well
    assert _report(anchor_kl=0.2).backoff_scale(CFG) is None  # would need 0.67: below min_scale
    assert _report(anchor_kl=0.11).backoff_scale(dataclasses.replace(CFG, min_scale=0.0)) is None  # off
    lost = _report(anchor_kl=0.11)
    lost.stored_known, lost.stored_kept, lost.stored_allowed = 5, 2, 1  # forgot earlier facts as well
    assert lost.backoff_scale(CFG) is None


def test_a_sleep_refused_for_drift_publishes_the_scaled_expert_it_judged(tiny_model: Path, tmp_path: Path) -> None:
    convs = [
        [{"role": "user", "content": "Remember this: the vault code is 4471 and the vault is in Oslo."},
         {"role": "assistant", "content": "Noted."}],
        [{"role": "user", "content": "Correction: the project lead is Dana Whitfield, not Tom."},
         {"role": "assistant", "content": "Okay."}],
    ]  # fmt: skip
    # Three steps on the tiny model drift 0.00022 (measured): a limit of 0.0001 refuses the full expert. A random
    # tiny model learns no fact, so recall is not asked to improve (bench/learning measures learning).
    gate = GateConfig(min_recall_gain=-1, max_anchor_kl=1e-4, max_base_kl=100, max_new_tokens=12, min_scale=0.05)
    cfg = SleepConfig(expert=ExpertConfig(rank=8), seeding=SeedingConfig(steps=3), gate=gate, threads=2,
                      dreaming=dataclasses.replace(DreamingConfig(), rounds=0),
                      keep_candidate=tmp_path / "candidate")  # fmt: skip
    registry = AdapterRegistry(tmp_path / "adapters")
    report = run_sleep(tiny_model, records_of(convs, "backoff"), registry, BASE, cfg)

    assert report.gate is not None and report.published is not None, report.summary()["gate"]
    g = report.gate
    assert g.unscaled["anchor_kl"] > gate.max_anchor_kl >= g.anchor_kl
    assert g.scale == pytest.approx((gate.backoff_target * gate.max_anchor_kl / g.unscaled["anchor_kl"]) ** 0.5)
    meta = registry.verify(report.published.version)
    assert "scaled" in meta.experts[-1].source and meta.gate["scale"] == pytest.approx(g.scale)
    full, published = load_adapter(tmp_path / "candidate"), load_adapter(registry.path(meta.version))
    for module in full.modules:
        assert torch.allclose(published.delta(module), g.scale * full.delta(module), atol=1e-6)
