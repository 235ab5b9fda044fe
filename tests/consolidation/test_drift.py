"""The drift budget on the tiny model: training that would drift far stops with the student within the budget,
keeping what it learned before; with no budget the same training drifts past it."""

from __future__ import annotations

from pathlib import Path

import pytest

from consolidation.anchors import MONITOR_PROMPTS
from consolidation.drift import DriftBudget, DriftGuard
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import SeedingConfig, StepLog, seed_knowledge
from consolidation.statements import Statement
from consolidation.targets import attach_teacher, make_target, replay_targets


def _setup(tiny_model: Path) -> tuple[Policy, list, list]:  # type: ignore[type-arg]
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    facts = [Statement(f"s{i}", f"The vault code is {code}.", (code,), f"The vault code is {code}.")
             for i, code in enumerate(("4471", "9023", "5518"))]  # fmt: skip
    targets = [make_target(policy, f.text, (f,), "What is the vault code?", "asked") for f in facts]
    attach_teacher(policy, targets)
    monitor = replay_targets(policy, list(MONITOR_PROMPTS[:4]), max_new_tokens=8)
    return policy, targets, monitor


def test_training_stops_within_the_drift_budget(tiny_model: Path) -> None:
    # A learning rate far too high for this model: without a budget it drifts by a lot in a few steps.
    cfg = SeedingConfig(steps=12, batch=3, lr=5e-2, onpolicy_every=0, w_replay=0.0, hard=1.0)
    policy, targets, monitor = _setup(tiny_model)
    free = DriftGuard(policy, monitor, None)
    seed_knowledge(policy, targets, [], [], cfg, guard=free)
    unbounded = DriftGuard(policy, monitor, DriftBudget()).kl()
    assert free.log == [] and unbounded > 0.02, unbounded  # the setting this test needs: real drift

    for patience in (1, 100):  # stopped as soon as it is over; or trained to the end, then settled
        policy, targets, monitor = _setup(tiny_model)
        budget = DriftBudget(max_kl=unbounded / 4, every=2, patience=patience)
        guard = DriftGuard(policy, monitor, budget)
        logs = seed_knowledge(policy, targets, [], [], cfg, guard=guard)

        assert guard.spent and not guard.log[-1].kept and guard.log[-1].kl > budget.max_kl
        assert (len(logs) < cfg.steps) == (patience == 1)
        # What the student holds now is the last state measured within the budget, not the overspent one.
        kept = [c.kl for c in guard.log if c.kept]
        assert abs(guard.kl() - (kept[-1] if kept else 0.0)) < 1e-3
        assert guard.kl() <= budget.max_kl


class EnoughSteps(Exception):
    pass


def test_warm_up_takes_the_first_steps_gently(tiny_model: Path) -> None:
    """Adam's first update moves every parameter by about the learning rate; the warm-up scales it down, so the
    same first steps drift less."""
    drift: dict[int, float] = {}
    for warmup in (0, 8):
        policy, targets, monitor = _setup(tiny_model)
        probe = DriftGuard(policy, monitor, None)
        cfg = SeedingConfig(steps=32, batch=3, lr=5e-2, warmup=warmup, onpolicy_every=0, w_replay=0.0, hard=1.0)

        def after(log: StepLog, warmup: int = warmup, probe: DriftGuard = probe) -> None:
            if log.step == 2:
                drift[warmup] = probe.kl()
                raise EnoughSteps

        with pytest.raises(EnoughSteps):
            seed_knowledge(policy, targets, [], [], cfg, on_step=after)
    assert drift[8] < drift[0] / 2, drift
