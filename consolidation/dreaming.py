"""Dreaming: after seeding, the model rehearses what it consolidated on problems it poses itself.

Each round: the student answers every open problem closed-book (k samples) and a verifier scores each attempt:
does it state the specifics (names, codes, numbers, dates) of the statement the problem is about, beyond what
the question already says (`seeding.verifier_score`; the statements are the user's own words, so the check
is exact, not a judge's opinion). Attempts that pass are trained on (rejection-sampling fine-tuning: the
student's own phrasing of the fact, which generalises past the teacher's); problems no attempt solves are
taught again along their statement by the teacher (the distillation loss of Seeding). Replay runs in every
step, and so do earlier sleeps' stored facts (as in Seeding; otherwise Dreaming's steps would train on this
sleep's facts alone). The curriculum moves toward what the student still gets wrong: mastered problems are
dropped, and for each statement with a failed problem the teacher writes a fresh question about it.
Rounds stop at the budget, when nothing is left open, or when the drift budget is spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from consolidation.drift import DriftGuard
from consolidation.losses import sequence_logprob
from consolidation.policy import Policy
from consolidation.seeding import (
    SeedingConfig,
    balanced_sample,
    distill,
    replay_loss,
    verifier_score,
    warm_up,
    weighted_sample,
)
from consolidation.targets import Target, asked_questions, attach_teacher, make_target


@dataclass(frozen=True)
class DreamingConfig:
    rounds: int = 2
    steps_per_round: int = 10
    problems_per_round: int = 32  # open problems attempted per round, spread over statements (sampling is the cost)
    batch: int = 4  # accepted attempts per step (and as many failed problems, re-taught)
    k: int = 4
    accept: float = 0.5  # share of the expected specifics an attempt must state
    mastered: float = 0.75  # share of attempts that pass for a problem to be dropped
    new_questions: int = 1  # fresh questions per statement with a failed problem, per round
    lr: float = 5e-4
    warmup: int = 0  # steps of linear warm-up of this phase's fresh optimizer (0: none; see SeedingConfig.warmup)
    # Continue Seeding's Adam moments instead of starting a fresh optimizer, whose first steps move every
    # parameter by about the learning rate (the drift trace's second jump, docs/BENCHMARKS.md).
    carry_optimizer: bool = False
    temperature: float = 0.8
    max_new_tokens: int = 40
    w_replay: float = 1.0
    seed: int = 0


@dataclass
class RoundLog:
    round: int
    problems: int
    pass_rate: float
    accepted: int
    failed: int
    dropped: int
    added: int
    seconds: float
    questions: list[str]  # the fresh questions this round posed


def dream(
    policy: Policy,
    problems: list[Target],
    replay: list[Target],
    cfg: DreamingConfig,
    seeding_cfg: SeedingConfig,
    on_round: Callable[[RoundLog], None] | None = None,
    guard: DriftGuard | None = None,
    opt: torch.optim.Optimizer | None = None,
    after_step: Callable[[], None] | None = None,
    stored: list[Target] | None = None,
) -> list[RoundLog]:
    """Rounds until the budget, nothing left open, or the drift budget spent (checked after each round's
    steps; a round that overspent it is undone). `stored`: earlier sleeps' facts, `seeding_cfg.stored_batch`
    of them distilled in every step."""
    rng = random.Random(cfg.seed)
    params = policy.trainable_parameters()
    opt = opt or torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)  # warm_up sets this phase's rate
    open_problems = [p for p in problems if p.expected]
    logs = []
    taken = 0  # optimizer steps so far (the warm-up spans rounds)
    for rnd in range(1, cfg.rounds + 1):
        if not open_problems or (guard and guard.spent):
            break
        start = time.perf_counter()
        posed = balanced_sample(rng, open_problems, lambda p: p.key, cfg.problems_per_round)
        attempts = policy.generate(
            [p.student_prompt for p in posed], student=True, n=cfg.k,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        )  # fmt: skip
        accepted: list[tuple[Target, list[int]]] = []
        failed: list[Target] = []
        pass_rates: list[float] = []
        for i, p in enumerate(posed):
            mine = attempts[i * cfg.k : (i + 1) * cfg.k]
            passed = [a for a in mine if a and verifier_score(policy.decode(a), p) >= cfg.accept]
            pass_rates.append(len(passed) / cfg.k)
            accepted += [(p, a) for a in passed]
            if not passed:
                failed.append(p)
        for _ in range(cfg.steps_per_round if accepted or failed else 0):
            taken += 1
            warm_up(opt, cfg.lr, taken, min(cfg.warmup, cfg.rounds * cfg.steps_per_round // 4))
            loss = torch.zeros(())
            good = balanced_sample(rng, accepted, lambda pa: pa[0].key, cfg.batch)
            if good:
                logits, mask, toks = policy.completion_logits(
                    [p.student_prompt for p, _ in good], [a for _, a in good], student=True
                )
                loss = loss - sequence_logprob(logits, toks, mask).mean()
            again = balanced_sample(rng, failed, lambda p: p.key, cfg.batch)
            again += weighted_sample(rng, stored or [], seeding_cfg.stored_batch)
            if again:
                loss = loss + distill(policy, again, seeding_cfg)[0]
            if cfg.w_replay > 0:
                loss = loss + cfg.w_replay * replay_loss(policy, replay, rng, seeding_cfg, cfg.batch)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if after_step:
                after_step()
        within = guard.check("dreaming", rnd, strict=True) if guard else True  # over the budget: round undone
        # Curriculum: drop what is mastered, pose a fresh question about each statement still failed.
        mastered = {id(p) for p, r in zip(posed, pass_rates, strict=True) if r >= cfg.mastered}
        keep = [p for p in open_problems if id(p) not in mastered]
        # (none after the last round, or after an undone one: nothing would train on them)
        asked = {p.question.lower() for p in problems}
        added = _fresh_problems(policy, failed, cfg.new_questions, asked) if within and rnd < cfg.rounds else []
        log = RoundLog(rnd, len(posed), sum(pass_rates) / len(pass_rates), len(accepted), len(failed),
                       len(open_problems) - len(keep), len(added), time.perf_counter() - start,
                       [t.question for t in added])  # fmt: skip
        logs.append(log)
        if on_round:
            on_round(log)
        open_problems = keep + added
        problems = problems + added
    return logs


def _fresh_problems(policy: Policy, failed: list[Target], n: int, asked: set[str]) -> list[Target]:
    if n <= 0 or not failed:
        return []
    sources = list({p.statements[0].text: p for p in failed}.values())
    written = asked_questions(policy, [p.statements[0] for p in sources], n, samples=n + 2)
    added = [
        make_target(policy, p.key, p.statements, a.question, "asked")  # the statement's spans (sleep.prepare)
        for p, qs in zip(sources, written, strict=True)
        for a in qs
        if a.question.lower() not in asked
    ]
    attach_teacher(policy, added)
    return [t for t in added if t.expected]
