"""Dreaming on the tiny model: a problem no closed-book attempt solves is taught again along its statement."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from consolidation.dreaming import DreamingConfig, dream
from consolidation.losses import sequence_logprob
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import SeedingConfig
from consolidation.statements import Statement
from consolidation.targets import Target, attach_teacher, make_target


def answer_logprob(policy: Policy, problem: Target) -> float:
    with torch.no_grad():
        logits, mask, toks = policy.completion_logits([problem.student_prompt], [problem.answer], student=True)
        return float(sequence_logprob(logits, toks, mask)[0])


def test_a_problem_no_attempt_solves_is_taught_along_its_statement(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    fact = Statement("s1", "The vault code is 4471.", ("4471",), "The vault code is 4471.")
    problem = make_target(policy, fact.text, (fact,), "What is the vault code?", "asked")
    attach_teacher(policy, [problem])
    assert problem.expected == ("4471",)
    before = answer_logprob(policy, problem)

    cfg = DreamingConfig(
        rounds=1, steps_per_round=8, k=2, lr=1e-2, warmup=0, max_new_tokens=6, w_replay=0, new_questions=0
    )
    logs = dream(policy, [problem], [], cfg, SeedingConfig(hard=1.0))

    # A random tiny model never says "4471": nothing is accepted, the statement is re-taught instead.
    assert (logs[0].accepted, logs[0].failed, logs[0].pass_rate) == (0, 1, 0.0)
    assert answer_logprob(policy, problem) > before + 0.5  # mean log-prob per token, in nats

    # A problem whose question already states every specific has nothing to check: it is not posed.
    policy.reset_expert()
    trivial = dataclasses.replace(problem, question="Is the vault code 4471?")
    assert dream(policy, [trivial], [], cfg, SeedingConfig()) == []
    assert abs(answer_logprob(policy, problem) - before) < 1e-4


def test_earlier_facts_are_rehearsed_in_every_dreaming_step(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    new = Statement("s2", "The vault code is 4471.", ("4471",), "The vault code is 4471.")
    old = Statement("s1", "The locker code is 9130.", ("9130",), "The locker code is 9130.")
    problem = make_target(policy, new.text, (new,), "What is the vault code?", "asked")
    stored = make_target(policy, old.text, (old,), "What is the locker code?", "asked")
    attach_teacher(policy, [problem, stored])
    before = answer_logprob(policy, stored)
    cfg = DreamingConfig(
        rounds=1, steps_per_round=8, k=2, lr=1e-2, warmup=0, max_new_tokens=6, w_replay=0, new_questions=0
    )
    dream(policy, [problem], [], cfg, SeedingConfig(hard=1.0))
    alone = answer_logprob(policy, stored) - before  # what the same-kind new fact does to it by itself
    policy.reset_expert()
    dream(policy, [problem], [], cfg, SeedingConfig(hard=1.0), stored=[stored])
    rehearsed = answer_logprob(policy, stored) - before
    # Mean log-prob per token, in nats: measured 0.56 rehearsed vs 0.24 alone.
    assert rehearsed > max(2 * alone, alone + 0.2), (rehearsed, alone)
