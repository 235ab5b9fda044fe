"""Dreaming: after seeding, the model rehearses what it consolidated on problems it poses itself.

Each round: the student answers every open problem closed-book (k samples); the teacher with the memory in
context is the judge: its grounded in-context answer is the reference, and an attempt's first sentence scores
by grounding.answer_f1, which counts only what the answer adds to the question. Attempts that score at least
`accept_f1` are trained on (rejection-sampling fine-tuning: maximise their likelihood, spread evenly over
memories), with replay against forgetting. With `hint_failures`, a problem that no attempt solves trains on
the judge's answer instead (STaR's "rationalization"): rejection sampling alone never reaches the facts the
student does not half-know. Off by default: measured, it taught the teacher's wrong answers as readily as
its right ones (docs/BENCHMARKS.md). The curriculum moves toward what the student still fails: problems it
solves in at least `mastered` of its attempts are dropped, and failed ones get teacher-written paraphrases
added. Rounds stop at the budget or when nothing is left to learn.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from consolidation.grounding import answer_f1, first_sentence
from consolidation.losses import sequence_logprob
from consolidation.policy import Policy
from consolidation.questions import paraphrases
from consolidation.seeding import Anchor, Example, SeedingConfig, balanced_sample, build_examples, replay_loss


@dataclass(frozen=True)
class DreamingConfig:
    rounds: int = 2
    steps_per_round: int = 10
    batch: int = 4
    k: int = 4
    accept_f1: float = 0.6
    mastered: float = 0.75
    paraphrases: int = 1
    hint_failures: bool = False  # a problem no attempt solves trains on the judge's answer (measured: no gain yet)
    lr: float = 3e-4
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
    hinted: int
    dropped: int
    added: int
    seconds: float


def dream(
    policy: Policy,
    problems: list[Example],
    anchors: list[Anchor],
    cfg: DreamingConfig,
    seeding_cfg: SeedingConfig,
    on_round: Callable[[RoundLog], None] | None = None,
) -> list[RoundLog]:
    rng = random.Random(cfg.seed)
    params = policy.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    open_problems = [p for p in problems if p.reference]
    logs = []
    for rnd in range(1, cfg.rounds + 1):
        if not open_problems:
            break
        start = time.perf_counter()
        attempts = policy.generate(
            [p.student_prompt for p in open_problems], student=True, n=cfg.k,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        )  # fmt: skip
        accepted: list[tuple[Example, list[int]]] = []
        pass_rates: list[float] = []
        hinted = 0
        for i, p in enumerate(open_problems):
            mine = attempts[i * cfg.k : (i + 1) * cfg.k]
            # Judged and trained on the answer proper (its first sentence), as the teacher's reference is.
            said = [first_sentence(policy.decode(a)) for a in mine]
            scores = [answer_f1(t, p.reference, p.question) for t in said]
            pass_rates.append(sum(s >= cfg.accept_f1 for s in scores) / cfg.k)
            accepted += [
                (p, policy.tokenizer(t, add_special_tokens=False)["input_ids"])
                for t, s in zip(said, scores, strict=True)
                if t and s >= cfg.accept_f1
            ]
            if cfg.hint_failures and pass_rates[-1] == 0:  # no attempt is right: learn the judge's answer
                accepted.append((p, policy.tokenizer(p.reference, add_special_tokens=False)["input_ids"]))
                hinted += 1
        for _ in range(cfg.steps_per_round if accepted else 0):
            batch = balanced_sample(rng, accepted, lambda pa: pa[0].memory.session_id, cfg.batch)
            logits, mask, toks = policy.completion_logits(
                [p.student_prompt for p, _ in batch], [a for _, a in batch], student=True
            )
            loss = -sequence_logprob(logits, toks, mask).mean()
            if cfg.w_replay > 0:
                loss = loss + cfg.w_replay * replay_loss(policy, anchors, rng, cfg.batch)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        # Curriculum: drop what is mastered, add paraphrases of what still fails.
        keep = [p for p, r in zip(open_problems, pass_rates, strict=True) if r < cfg.mastered]
        failing = [p for p, r in zip(open_problems, pass_rates, strict=True) if r == 0]
        asked = [p.question for p in failing]
        reworded = paraphrases(policy, asked, cfg.paraphrases) if asked and cfg.paraphrases else [[] for _ in asked]
        new_pairs = [(p.memory, q) for p, qs in zip(failing, reworded, strict=True) for q in qs]
        added = [e for e in build_examples(policy, new_pairs, seeding_cfg) if e.reference]
        log = RoundLog(rnd, len(open_problems), sum(pass_rates) / len(pass_rates), len(accepted) - hinted, hinted,
                       len(open_problems) - len(keep), len(added), time.perf_counter() - start)  # fmt: skip
        logs.append(log)
        if on_round:
            on_round(log)
        open_problems = keep + added
    return logs
