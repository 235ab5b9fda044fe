"""The publish gate: a new adapter is published only if it recalls the new knowledge closed-book better than
the current model did, and has not drifted on a fixed anchor set.

- Recall: on held-out probes (generated this sleep, never trained on), the closed-book answer states what the
  grounded in-context answer adds to the question (grounding.answer_f1 >= `match_f1`, first sentences; probes
  without a grounded answer do not count);
  reported for the current model (before) and the student (after), and relative to in-context recall (which
  is 1 by construction: the in-context answer is the reference).
- Drift: mean per-token KL(previous || student) over the previous model's greedy answers to the anchor prompts,
  and the share of anchor answers that stay exactly the same under greedy decoding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from consolidation.grounding import answer_f1, first_sentence
from consolidation.policy import Policy
from consolidation.seeding import Anchor, Example, kl_to_previous


@dataclass(frozen=True)
class GateConfig:
    min_recall_gain: float = 0.0  # recall_after - recall_before must exceed this
    max_anchor_kl: float = 0.1
    min_anchor_unchanged: float = 0.0  # share of anchor answers that must stay identical
    match_f1: float = 0.5
    max_new_tokens: int = 40


@dataclass
class GateReport:
    passed: bool
    reasons: list[str]
    probes: int
    heldout: bool
    recall_before: float
    recall_after: float
    anchor_kl: float
    anchor_unchanged: float

    def metrics(self) -> dict[str, float | int | bool]:
        return {k: v for k, v in asdict(self).items() if k != "reasons"}


@torch.no_grad()
def closed_book_answers(policy: Policy, examples: list[Example], *, student: bool, max_new_tokens: int) -> list[str]:
    out = policy.generate([e.student_prompt for e in examples], student=student, max_new_tokens=max_new_tokens)
    return [first_sentence(policy.decode(a)) for a in out]  # the answer proper, as the reference is


@torch.no_grad()
def anchor_drift(policy: Policy, anchors: list[Anchor], max_new_tokens: int) -> tuple[float, float]:
    if not anchors:
        return 0.0, 1.0
    kl = float(kl_to_previous(policy, anchors)[0])
    prompts, answers = [a.prompt for a in anchors], [a.answer for a in anchors]
    regenerated = policy.generate(prompts, student=True, max_new_tokens=max_new_tokens)
    unchanged = sum(r == a for r, a in zip(regenerated, answers, strict=True)) / len(anchors)
    return kl, unchanged


def recall(answers: list[str], probes: list[Example], match_f1: float) -> float:
    """Share of the probes with a reference whose answer states the reference's fact (answer_f1 >= match_f1)."""
    pairs = [(a, p) for a, p in zip(answers, probes, strict=True) if p.reference]
    return sum(answer_f1(a, p.reference, p.question) >= match_f1 for a, p in pairs) / max(len(pairs), 1)


def evaluate(
    policy: Policy,
    probes: list[Example],
    anchors: list[Anchor],
    cfg: GateConfig,
    *,
    heldout: bool,
    recall_before: float,
) -> GateReport:
    after = recall(
        closed_book_answers(policy, probes, student=True, max_new_tokens=cfg.max_new_tokens), probes, cfg.match_f1
    )
    kl, unchanged = anchor_drift(policy, anchors, cfg.max_new_tokens)
    reasons = []
    if after - recall_before <= cfg.min_recall_gain:
        reasons.append(f"recall did not improve enough: {recall_before:.2f} -> {after:.2f}")
    if kl > cfg.max_anchor_kl:
        reasons.append(f"anchor drift KL {kl:.3f} > {cfg.max_anchor_kl}")
    if unchanged < cfg.min_anchor_unchanged:
        reasons.append(f"only {unchanged:.0%} of anchor answers unchanged (< {cfg.min_anchor_unchanged:.0%})")
    return GateReport(not reasons, reasons, len(probes), heldout, recall_before, after, kl, unchanged)
