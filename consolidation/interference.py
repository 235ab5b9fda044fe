"""Which earlier facts this sleep is overwriting, measured while it trains, so that they are rehearsed more.

A sleep replays earlier sleeps' stored facts: a few drawn at random into every step (`SeedingConfig.stored_batch`).
A new fact of the same kind as a stored one pulls the model's answer about the stored one towards its own: on
seed 5, "the Kreckzean Tournament takes place on May 21" made the model say the Hyskiox Tournament (March 3)
did too, and every sleep from the fifth was refused for such overwrites (docs/BENCHMARKS.md, "Retention over
sequential sleeps"). A random share of replay does not single out the facts at risk.

The watch measures them instead of guessing from wording (as maximally interfered retrieval, Aljundi et al.
2019, picks replay by the loss a virtual update raises): every `every` optimizer updates it takes the student's
loss on each stored target, and a target whose loss rose since the sleep began more than the median stored
target's is drawn more often, its weight times 1 + excess / `scale` (at most `cap` times). The median is the
drift every fact shares, which replay of all of them answers; the excess is what this sleep's new facts do to
that one. Seeding and Dreaming draw stored targets by weight
(`seeding.weighted_sample`), so both phases rehearse what is being lost while it is being lost.

What "loss" means is `WatchConfig.tokens`: the mean over the whole stored answer (the default), or over the
answer's tokens that state its spans (the names, codes, numbers, dates a right answer must state). The second
is for overwrites of one token of many: seed 6's new "September 10" moved three stored dates to September, one
token of a dozen in each answer, and none was among the watch's top rises (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from typing import Literal

import torch

from consolidation.losses import sequence_logprob
from consolidation.policy import Policy
from consolidation.statements import span_pattern
from consolidation.targets import Target, answer_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchConfig:
    every: int = 8  # optimizer updates between measurements
    scale: float = 0.05  # nats per token of rise beyond the median that doubles a target's weight
    cap: float = 16.0  # most a target's weight is multiplied by
    batch: int = 16  # targets per forward pass when measuring
    tokens: Literal["answer", "spans"] = "answer"  # whose loss is watched: the whole answer's, or its spans'


@torch.no_grad()
def answer_nll(policy: Policy, targets: list[Target], batch: int = 16, weights: list[list[float]] | None = None
               ) -> list[float]:  # fmt: skip
    """Each target's mean negative log-likelihood per answer token under the student (no context); with
    `weights` (one per answer token), the weighted mean."""
    out: list[float] = []
    for i in range(0, len(targets), batch):
        chunk = targets[i : i + batch]
        logits, mask, toks = policy.completion_logits(
            [t.student_prompt for t in chunk], [t.answer for t in chunk], student=True
        )
        if weights is not None:
            for row, w in enumerate(weights[i : i + batch]):
                mask[row, : len(w)] = torch.tensor(w, dtype=mask.dtype, device=mask.device)
        out += (-sequence_logprob(logits, toks, mask)).tolist()
    return out


def span_weights(policy: Policy, target: Target) -> list[float]:
    """1 for each answer token inside a span the answer must state (`Target.expected`), 0 elsewhere; all 1
    where the answer states none of them (then the whole answer is the fact)."""
    text = answer_text(target.statements)
    enc = policy.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != target.answer[: len(enc["input_ids"])]:
        return [1.0] * len(target.answer)  # not the statements' own words: no offsets to go by
    ranges = [m.span() for span in target.expected for m in span_pattern(span).finditer(text)]
    inside = [float(any(a < e and b > s for s, e in ranges)) for a, b in enc["offset_mapping"]]
    if not any(inside):
        return [1.0] * len(target.answer)
    return inside + [0.0] * (len(target.answer) - len(inside))  # the end-of-answer token states nothing


@dataclass
class InterferenceWatch:
    """Re-weights `targets` (earlier sleeps' stored facts) in place by how much their loss rose this sleep."""

    policy: Policy
    targets: list[Target]
    cfg: WatchConfig
    start: list[float] = field(init=False)  # each target's loss when the sleep began
    prior: list[float] = field(init=False)  # the draw weights the store gave
    rises: list[float] = field(init=False)  # the latest measurement's rise per target (nats per token)
    weights: list[list[float]] | None = field(init=False)  # per answer token (None: all count)
    updates: int = field(init=False, default=0)
    measurements: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.prior = [t.weight for t in self.targets]
        spans = self.cfg.tokens == "spans"
        self.weights = [span_weights(self.policy, t) for t in self.targets] if spans else None
        self.start = self.nll() if self.targets else []
        self.rises = [0.0] * len(self.targets)

    def nll(self) -> list[float]:
        return answer_nll(self.policy, self.targets, self.cfg.batch, self.weights)

    def tick(self) -> None:
        """Called after every optimizer update; measures every `every` updates."""
        self.updates += 1
        if self.targets and self.cfg.every > 0 and self.updates % self.cfg.every == 0:
            self.measure()

    def measure(self) -> None:
        now = self.nll()
        self.rises = [n - s for n, s in zip(now, self.start, strict=True)]
        self.measurements += 1
        typical = statistics.median(self.rises)
        for t, prior, rise in zip(self.targets, self.prior, self.rises, strict=True):
            t.weight = prior * boost(rise - typical, self.cfg)
        top = sorted(range(len(self.targets)), key=lambda i: -self.rises[i])[:3]
        log.info("interference watch, update %d: %d of %d stored targets rose; most: %s", self.updates,
                 sum(r > 0 for r in self.rises), len(self.targets),
                 "; ".join(f"{self.targets[i].question!r} +{self.rises[i]:.3f}" for i in top))  # fmt: skip


def boost(excess: float, cfg: WatchConfig) -> float:
    """How much more often a target is drawn whose loss rose by `excess` nats per token more than the median
    stored target's (1: not more often)."""
    return min(cfg.cap, 1.0 + max(0.0, excess) / cfg.scale)
