"""A drift budget for training: a sleep stops before it drifts past what the gate would accept.

Drift grows with training steps, and a dense sleep (many statements per session token: a pasted document) takes
many steps: its candidate then recalls part of the new knowledge yet fails the gate's anchor KL, and users see
nothing learned. The guard measures, every few steps, the student's KL to the model the sleep started from on
*monitor* prompts (consolidation/anchors.py: generic prompts that share no template with replay or with the
gate's anchors, so the gate's own check stays independent of what training watched). Drift can rise and fall
back (replay pulls it back), so Seeding stops only after `patience` checks in a row over the budget; whenever it
ends over the budget, the last parameters measured within it come back, and Dreaming is skipped. A Dreaming
round that ends over the budget is undone. The sleep publishes what it learned within the budget instead of
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from consolidation.losses import forward_kl
from consolidation.policy import Policy
from consolidation.targets import Target


@dataclass(frozen=True)
class DriftBudget:
    # Monitor KL (per token) against the start model. The gate allows 0.1 on its anchors; on the tuning seed the
    # monitor read 0.004-0.03 above the anchors at every check (bench/drift_trace.py), so the same number leaves
    # the anchors that margin.
    max_kl: float = 0.1
    every: int = 8  # training steps between checks (a check: two forward passes over the monitor prompts)
    patience: int = 3  # checks in a row over the budget before Seeding stops (drift can fall back: replay)


@dataclass
class DriftCheck:
    phase: str
    step: int
    kl: float
    kept: bool  # within the budget: these parameters are the fallback now


@torch.no_grad()
def monitor_kl(policy: Policy, monitor: list[Target]) -> float:
    """Mean per-token KL(start model || student) along the start model's greedy answers to the monitor prompts
    (the teacher view without context is the start model)."""
    prompts, answers = [t.student_prompt for t in monitor], [t.answer for t in monitor]
    ref, mask, _ = policy.completion_logits(prompts, answers, student=False)
    now, _, _ = policy.completion_logits(prompts, answers, student=True)
    return float(forward_kl(ref, now, mask))


class DriftGuard:
    """Wraps one Policy's trainable parameters: `check` during training, `settle` when it ends. The student it
    leaves behind was measured within the budget (or is the start, when nothing ever was)."""

    def __init__(self, policy: Policy, monitor: list[Target], budget: DriftBudget | None) -> None:
        self.policy, self.monitor, self.budget = policy, monitor, budget
        self.params = policy.trainable_parameters()
        self.log: list[DriftCheck] = []
        self.spent = False  # training stopped on the budget; nothing more may train
        self._over = 0  # checks in a row over the budget
        self._good = self._snapshot()

    @property
    def active(self) -> bool:
        return self.budget is not None and bool(self.monitor)

    def due(self, step: int) -> bool:
        return self.active and self.budget is not None and step % self.budget.every == 0

    def kl(self) -> float:
        return monitor_kl(self.policy, self.monitor)

    def check(self, phase: str, step: int, *, strict: bool = False) -> bool:
        """Measure. Within budget: keep these parameters as the fallback. Over it `patience` times in a row (once,
        if `strict`): restore the fallback and stop. Returns whether training may go on."""
        if not self.active or self.spent:
            return not self.spent
        assert self.budget is not None
        kl = self.kl()
        kept = kl <= self.budget.max_kl
        self.log.append(DriftCheck(phase, step, round(kl, 4), kept))
        if kept:
            self._good, self._over = self._snapshot(), 0
            return True
        self._over += 1
        if strict or self._over >= self.budget.patience:
            self._restore()
            return False
        return True

    def settle(self) -> None:
        """End of a phase: if the last check was over the budget, go back to the last one within it (and train
        no more)."""
        if self.active and not self.spent and self._over:
            self._restore()

    def _restore(self) -> None:
        with torch.no_grad():
            for p, good in zip(self.params, self._good, strict=True):
                p.copy_(good)
        self.spent = True

    def _snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]
