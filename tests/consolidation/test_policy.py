"""Batched sampling must give each prompt its own completions, whatever the chunking and length-sorting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from consolidation.policy import ExpertConfig, Policy


def test_batched_generation_keeps_each_prompt_s_completions(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    questions = ["Hi", "What is the capital of a country far away from here?", "Why?", "Name three colours, please."]
    prompts = [policy.chat_ids([{"role": "user", "content": q}]) for q in questions]
    alone = [policy.generate([p], student=True, max_new_tokens=6)[0] for p in prompts]

    policy.max_rows = 2  # force several chunks, each sorted by length
    together = policy.generate(prompts, student=True, max_new_tokens=6)
    assert together == alone

    twice = policy.generate(prompts, student=True, n=2, max_new_tokens=6)
    assert [twice[2 * i] for i in range(len(prompts))] == alone  # greedy: both copies equal, prompt-major order
    assert [twice[2 * i + 1] for i in range(len(prompts))] == alone


def test_long_sampling_calls_report_progress_per_chunk(tiny_model: Path) -> None:
    """A sleep's question phase is one sampling call over every statement; the job shows progress from these."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    prompts = [policy.chat_ids([{"role": "user", "content": "x" * i}]) for i in range(1, 6)]
    policy.max_rows = 4  # n=2 -> two prompts a chunk -> three chunks
    seen: list[tuple[int, int]] = []
    policy.generate(prompts, student=False, n=2, max_new_tokens=2, on_chunk=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_sampling_reads_each_prompt_once_and_samples_as_hf_would(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n samples per prompt come from one prefill per prompt whose cache is copied n times; the samples are
    the ones HF's own `num_return_sequences` (every prompt read n times) draws from the same seed."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    torch.manual_seed(1)
    for p in policy.trainable_parameters():  # a nonzero expert: the student's path differs from the teacher's
        torch.nn.init.normal_(p, std=0.05)
    questions = ["Hi", "What is the capital of a country far away from here?", "Why?", "Name three colours, please."]
    prompts = [policy.chat_ids([{"role": "user", "content": q}]) for q in questions]
    policy.max_rows = 6  # several chunks, rows of different lengths left-padded in each

    def sample(student: bool) -> list[list[int]]:
        torch.manual_seed(0)
        return policy.generate(prompts, student=student, n=3, temperature=0.9, max_new_tokens=8)

    shared = {s: sample(s) for s in (True, False)}
    assert shared[True] != shared[False]
    monkeypatch.setattr(Policy, "_shared_prefill", lambda self, ids, attn, n: {})  # HF's path: no shared cache
    assert {s: sample(s) for s in (True, False)} == shared


def test_scoring_reads_the_shared_prompt_start_once_with_the_same_logits_and_gradients(tiny_model: Path) -> None:
    """Training rows all start with the chat template's system turn; it goes through the model once and every
    row continues from its cache. The logits, and the expert's gradient through that shared cache, must be
    those of reading every row whole."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    torch.manual_seed(1)
    for p in policy.trainable_parameters():
        torch.nn.init.normal_(p, std=0.05)
    questions = ["Hi", "What is the capital of a country far away from here?", "Why?", "Name three colours, please."]
    prompts = [policy.chat_ids([{"role": "user", "content": q}]) for q in questions]
    completions = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    assert len(policy._shared_prefix(prompts)) >= policy.min_shared_prefix  # the template's system turn

    def score(student: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        policy.model.zero_grad(set_to_none=True)
        logits, mask, toks = policy.completion_logits(prompts, completions, student=student)
        if student:
            picked = logits.log_softmax(-1).gather(-1, toks.unsqueeze(-1)).squeeze(-1)
            (-(picked * mask).sum()).backward()
        grads = [p.grad.clone() for p in policy.trainable_parameters() if p.grad is not None]
        return (logits * mask.unsqueeze(-1)).detach(), grads

    shared = {s: score(s) for s in (True, False)}
    policy.min_shared_prefix = 10**9  # every row read whole
    whole = {s: score(s) for s in (True, False)}
    for s in (True, False):
        assert torch.allclose(shared[s][0], whole[s][0], atol=1e-4)
    assert len(shared[True][1]) == len(policy.trainable_parameters()) > 0 and not shared[False][1]
    for a, b in zip(shared[True][1], whole[True][1], strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)
