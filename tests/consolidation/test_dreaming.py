"""Dreaming on the tiny model: what the student fails closed-book, it learns from the judge's answer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from consolidation.dreaming import DreamingConfig, dream
from consolidation.losses import sequence_logprob
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import Example, SeedingConfig
from consolidation.sessions import Memory


def reference_logprob(policy: Policy, problem: Example, answer: list[int]) -> float:
    with torch.no_grad():
        logits, mask, toks = policy.completion_logits([problem.student_prompt], [answer], student=True)
        return float(sequence_logprob(logits, toks, mask)[0])


def test_a_problem_no_attempt_solves_is_learned_from_the_judge_s_answer(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    memory = Memory("s1", [{"role": "user", "content": "The vault code is 4471."}])
    question = "What is the vault code?"
    problem = Example(
        memory, question,
        policy.chat_ids([{"role": "user", "content": question}]),
        policy.chat_ids([{"role": "user", "content": question}], context=memory.render()),
        reference="The vault code is 4471.",
    )  # fmt: skip
    answer = policy.tokenizer(problem.reference, add_special_tokens=False)["input_ids"]
    before = reference_logprob(policy, problem, answer)

    cfg = DreamingConfig(
        rounds=1, steps_per_round=8, k=2, lr=1e-2, max_new_tokens=6, w_replay=0, paraphrases=0, hint_failures=True
    )
    logs = dream(policy, [problem], [], cfg, SeedingConfig(max_new_tokens=6))

    # A random tiny model never says "4471": no attempt is accepted, the judge's answer is trained on instead.
    assert (logs[0].accepted, logs[0].hinted, logs[0].pass_rate) == (0, 1, 0.0)
    assert reference_logprob(policy, problem, answer) > before + 0.5  # mean log-prob per token, in nats

    policy.reset_expert()
    logs = dream(policy, [problem], [], dataclasses.replace(cfg, hint_failures=False), SeedingConfig())
    assert logs[0].hinted == 0
    assert abs(reference_logprob(policy, problem, answer) - before) < 1e-4  # nothing to learn from: no step
