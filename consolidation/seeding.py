"""Knowledge Seeding: generalized distillation from the teacher (the current model with the session in context)
into the student (the same weights plus a new low-rank expert, without the context). One step, in order:

1. off-policy   - targets (consolidation/targets.py): questions about each statement of the session, answered
                  by the statement; the student matches the teacher's distribution along it, each token
                  weighted by how much the session supports it (losses.distill_loss, evidence weights);
2. stored facts - the same loss on facts earlier sleeps consolidated (consolidation/factstore.py), drawn more
                  often when the current model no longer recalls them: replay of verified answers, not of the
                  previous model's outputs (which drift);
3. on-policy    - every `onpolicy_every` steps the student samples k answers to a few targets; the teacher,
                  with the context, grades every sampled token (reverse KL, exact over the vocabulary), and
4. RL imitation - each sample's reward is the teacher's mean log-likelihood of it plus a verifier bonus (does
                  it state the statement's specifics); group-relative advantages; policy gradient;
5. replay       - generic prompts answered by the original base (sleep.SleepConfig.replay_from), forward KL
                  to it, against forgetting and against drift piling up over sleeps;
6. contrast     - opt-in (`contrast`): a drawn target's question about an untold value, its told value pushed
                  down there (consolidation/contrast.py).

loss = w_distill * (1 + 2) + w_rkl * 3 + w_pg * 4 + w_replay * 5 + w_contrast * 6, then clip and step. The
budget is a number of passes over the new targets (`epochs`), so a sleep's cost follows what it has to learn,
cut short by a drift budget (consolidation/drift.py, off by default) when one is set and training drifts past
it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from consolidation.contrast import contrasts, unlikelihood
from consolidation.drift import DriftGuard
from consolidation.losses import (
    distill_loss,
    evidence_weights,
    group_advantages,
    policy_gradient,
    reverse_kl,
    sequence_logprob,
)
from consolidation.policy import Policy
from consolidation.statements import states_span
from consolidation.targets import Target

T = TypeVar("T")


@dataclass(frozen=True)
class SeedingConfig:
    epochs: float = 4.0  # passes over the new targets
    steps: int | None = None  # a fixed number of steps instead (benchmarks comparing budgets)
    min_steps: int = 10
    max_steps: int = 400
    batch: int = 8  # new targets per step
    # Earlier sleeps' facts per step (when there are any), in Dreaming's steps too. As many as new targets: at 2
    # a same-kind sleep cost sleep 1's probes 8 -> 6 of 16; at 8 it kept 9 (seed 2, docs/BENCHMARKS.md).
    stored_batch: int = 8
    # A drawn transfer target (`targets.transfer_targets`) brings the new question it was made from into the same
    # step, so the two answers differ only by the swapped span and the gradient on their shared wording cancels.
    transfer_twins: bool = False
    # Contrast pairs per step (`consolidation/contrast.py`; 0: off): a drawn new target's question asked about an
    # untold value, the told answer pushed down there (unlikelihood, weight `w_contrast`), so the value the
    # question names has to steer the answer.
    contrast: int = 0
    w_contrast: float = 1.0
    replay_batch: int = 4  # generic replay prompts per step
    onpolicy_every: int = 4  # a step that samples, every n steps (0: never)
    onpolicy_batch: int = 2  # targets the student samples for on such a step
    k: int = 4  # student samples per target (on-policy group)
    lr: float = 1e-3
    # Steps of linear learning-rate warm-up (0: none; at most a quarter of the budget). Off: on the report seed
    # the warm-ups with the drift budget cost recall (docs/BENCHMARKS.md, "Drift control").
    warmup: int = 0
    hard: float = 0.5  # share of plain cross-entropy on the statement in the distillation loss
    evidence_floor: float = 0.25  # weight of tokens the session does not support
    evidence_scale: float = 2.0  # nats of evidence for full weight
    verifier_bonus: float = 1.0  # on-policy reward for stating the statement's specifics
    w_distill: float = 1.0
    w_rkl: float = 0.5
    w_pg: float = 0.2
    w_replay: float = 1.0
    max_new_tokens: int = 40
    temperature: float = 0.8
    clip: float = 1.0
    seed: int = 0

    def budget(self, targets: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(self.min_steps, min(self.max_steps, math.ceil(self.epochs * targets / self.batch)))


@dataclass
class StepLog:
    step: int
    steps: int
    loss: float
    distill: float
    rkl: float
    pg: float
    replay: float
    reward: float
    seconds: float
    tokens: int
    contrast: float = 0.0


def distill(policy: Policy, targets: list[Target], cfg: SeedingConfig, hard: float | None = None
            ) -> tuple[torch.Tensor, int]:  # fmt: skip
    """The evidence-weighted distillation loss of the student on these targets, and its token count."""
    logits, mask, toks = policy.completion_logits(
        [t.student_prompt for t in targets], [t.answer for t in targets], student=True
    )
    width = toks.shape[1]
    k = targets[0].topk_ids.shape[-1]  # type: ignore[union-attr]
    ids = torch.zeros(len(targets), width, k, dtype=torch.long, device=logits.device)
    logp = torch.full(ids.shape, -1e4, device=logits.device)
    weights = torch.zeros(len(targets), width, device=logits.device)
    for i, t in enumerate(targets):
        assert t.topk_ids is not None and t.topk_logp is not None, "attach_teacher first"
        n = len(t.answer)
        ids[i, :n], logp[i, :n] = t.topk_ids, t.topk_logp
        weights[i, :n] = 1.0 if t.evidence is None else evidence_weights(t.evidence, cfg.evidence_floor,
                                                                          cfg.evidence_scale)  # fmt: skip
    return distill_loss(logits, toks, ids, logp, weights, mask, cfg.hard if hard is None else hard), int(mask.sum())


def verifier_score(answer: str, target: Target) -> float:
    """Share of the target's expected specifics the answer states (0 when there is nothing to check)."""
    expected = target.expected
    return sum(states_span(answer, s) for s in expected) / len(expected) if expected else 0.0


def seed_knowledge(
    policy: Policy,
    targets: list[Target],
    stored: list[Target],
    replay: list[Target],
    cfg: SeedingConfig,
    on_step: Callable[[StepLog], None] | None = None,
    guard: DriftGuard | None = None,
    opt: torch.optim.Optimizer | None = None,
    after_step: Callable[[], None] | None = None,
) -> list[StepLog]:
    """Train the new expert for the budget's steps, or until `guard` finds the drift budget spent (it then
    restores the last parameters within it). `opt`: an optimizer over the expert to use (and leave, with its
    moments, to Dreaming) instead of a fresh AdamW. `after_step`: called after every update (the null-space
    projection, consolidation/nullspace.py)."""
    rng = random.Random(cfg.seed)
    params = policy.trainable_parameters()
    opt = opt or torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    logs: list[StepLog] = []
    steps = cfg.budget(len(targets))
    twin_of = {t.question: t for t in targets}
    pairs = {}
    if cfg.contrast > 0:  # no untold value is one a trained or replayed statement tells
        pairs = contrasts(policy, targets, [st.text for t in [*targets, *stored] for st in t.statements], cfg.seed)
    for step in range(1, steps + 1 if targets else 1):
        start = time.perf_counter()
        tokens = 0
        batch = balanced_sample(rng, targets, lambda t: t.key, cfg.batch)
        old = weighted_sample(rng, stored, cfg.stored_batch)
        if cfg.transfer_twins:
            old += twins(old, twin_of, batch)

        # 1 + 2. off-policy: the statements, distilled from the teacher with the session in context.
        dist, n = distill(policy, batch + old, cfg) if cfg.w_distill > 0 else (torch.zeros(()), 0)
        tokens += n

        # 3 + 4. on-policy: student samples, graded token by token (reverse KL) and as sequences (reward).
        rkl, pg, reward = torch.zeros(()), torch.zeros(()), 0.0
        if cfg.onpolicy_every and step % cfg.onpolicy_every == 0 and (cfg.w_rkl > 0 or cfg.w_pg > 0):
            rkl, pg, reward, n = _onpolicy(policy, batch[: cfg.onpolicy_batch], cfg)
            tokens += n

        # 5. replay: generic prompts answered by the original base (or the previous version), forward KL to it.
        rep, n = replay_loss(policy, replay, rng, cfg) if cfg.w_replay > 0 else (torch.zeros(()), 0)
        tokens += n

        # 6. contrast: the told value pushed down where the question names an untold one.
        con = torch.zeros(())
        chosen = [pairs[t.question] for t in batch if t.question in pairs][: cfg.contrast]
        if chosen and cfg.w_contrast > 0:
            con = unlikelihood(policy, chosen)
            tokens += sum(len(c.answer) for c in chosen)

        loss = cfg.w_distill * dist + cfg.w_rkl * rkl + cfg.w_pg * pg + cfg.w_replay * rep + cfg.w_contrast * con
        warm_up(opt, cfg.lr, step, min(cfg.warmup, steps // 4))  # a short budget is not spent warming up
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            if after_step:
                after_step()
        log = StepLog(step, steps, loss.item(), dist.item(), rkl.item(), pg.item(), rep.item(), reward,
                      time.perf_counter() - start, tokens, con.item())  # fmt: skip
        logs.append(log)
        if on_step:
            on_step(log)
        if guard and (guard.due(step) or step == steps) and not guard.check("seeding", step):
            break
    if guard:
        guard.settle()
    return logs


def twins(drawn: list[Target], twin_of: dict[str, Target], batch: list[Target]) -> list[Target]:
    """The new targets the drawn transfer targets were made from, once each, leaving out those `batch` holds."""
    out: list[Target] = []
    for t in drawn:
        twin = twin_of.get(str(t.extra.get("twin", "")))
        if twin is not None and all(twin is not u for u in [*batch, *out]):
            out.append(twin)
    return out


def warm_up(opt: torch.optim.Optimizer, lr: float, step: int, steps: int) -> None:
    """Linear warm-up. Adam's first updates move every parameter by about the learning rate whatever the gradient,
    and replay (what holds generic behaviour in place) has nothing to pull against yet: measured on the tuning
    seed (bench/drift_trace.py), most of a sleep's drift arrived in its first 8 steps."""
    for group in opt.param_groups:
        group["lr"] = lr * min(1.0, step / steps) if steps > 0 else lr


def _onpolicy(policy: Policy, on: list[Target], cfg: SeedingConfig) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    samples = policy.generate(
        [t.student_prompt for t in on], student=True, n=cfg.k, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
    )  # fmt: skip
    owners = [t for t in on for _ in range(cfg.k)]
    keep = [i for i, s in enumerate(samples) if s]
    if not keep:
        return torch.zeros(()), torch.zeros(()), 0.0, 0
    owners_k, samples_k = [owners[i] for i in keep], [samples[i] for i in keep]
    groups = torch.tensor([on.index(t) for t in owners_k], device=policy.device)
    t_logits, mask, toks = policy.completion_logits([t.teacher_prompt for t in owners_k], samples_k, student=False)
    s_logits, _, _ = policy.completion_logits([t.student_prompt for t in owners_k], samples_k, student=True)
    rkl = reverse_kl(s_logits, t_logits, mask)
    bonus = torch.tensor([verifier_score(policy.decode(s), t) for s, t in zip(samples_k, owners_k, strict=True)],
                         device=policy.device)  # fmt: skip
    rewards = sequence_logprob(t_logits, toks, mask) + cfg.verifier_bonus * bonus
    pg = policy_gradient(sequence_logprob(s_logits, toks, mask), group_advantages(rewards, groups))
    return rkl, pg, float(rewards.mean()), int(mask.sum())


def balanced_sample(rng: random.Random, items: list[T], owner: Callable[[T], str], size: int) -> list[T]:
    """Up to `size` distinct items spread evenly over their owners, owners in random order: a statement that
    few questions cover is trained as often as one that many do."""
    pools: dict[str, list[T]] = {}
    for item in items:
        pools.setdefault(owner(item), []).append(item)
    queues = [rng.sample(pool, len(pool)) for pool in pools.values()]
    rng.shuffle(queues)
    out: list[T] = []
    while len(out) < size and any(queues):
        for queue in queues:
            if queue and len(out) < size:
                out.append(queue.pop())
    return out


def weighted_sample(rng: random.Random, targets: list[Target], size: int) -> list[Target]:
    """Up to `size` distinct targets drawn in proportion to their weights (decayed stored facts weigh more)."""
    if not targets or size <= 0:
        return []
    keys = sorted(range(len(targets)), key=lambda i: rng.random() ** (1.0 / max(targets[i].weight, 1e-6)))
    return [targets[i] for i in keys[-size:]]


def replay_loss(policy: Policy, replay: list[Target], rng: random.Random, cfg: SeedingConfig,
                batch: int | None = None) -> tuple[torch.Tensor, int]:  # fmt: skip
    """Forward KL(replayed model || student), up to a constant, on a sample of replay prompts along that model's
    answers (its top-k, computed once: `targets.replay_targets`); and its token count."""
    size = cfg.replay_batch if batch is None else batch
    if not replay or size <= 0:
        return torch.zeros(()), 0
    return distill(policy, rng.sample(replay, min(size, len(replay))), cfg, hard=0.0)
