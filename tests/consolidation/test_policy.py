"""Batched sampling must give each prompt its own completions, whatever the chunking and length-sorting.

These compare two ways of computing the same thing exactly, so they run in fp32: bf16 matmuls round differently
with the batch's shape. Mixed precision has its own tests (test_precision.py)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from consolidation.policy import ExpertConfig, Policy


def test_batched_generation_keeps_each_prompt_s_completions(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4), precision="fp32")
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
    policy = Policy(tiny_model, None, ExpertConfig(rank=4), precision="fp32")
    prompts = [policy.chat_ids([{"role": "user", "content": "x" * i}]) for i in range(1, 6)]
    policy.max_rows = 4  # n=2 -> two prompts a chunk -> three chunks
    seen: list[tuple[int, int]] = []
    policy.generate(prompts, student=False, n=2, max_new_tokens=2, on_chunk=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_greedy_decoding_gives_hf_generate_s_completions(tiny_model: Path) -> None:
    """The decoding loop (each prompt read once, finished rows dropped) must complete as HF's `generate` does,
    for the student (with a nonzero expert) and the teacher, rows of different lengths ending at different
    steps in one chunk."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4), precision="fp32")
    torch.manual_seed(1)
    for p in policy.trainable_parameters():
        torch.nn.init.normal_(p, std=0.5)  # a strong expert: varied student completions
    questions = ["Hi", "What is the capital of a country far away from here?", "Why?", "Name three colours, please."]
    prompts = [policy.chat_ids([{"role": "user", "content": q}]) for q in questions]
    eos = policy.tokenizer.eos_token_id
    # The tiny model never ends a turn by itself: a token the last row emits early ends turns too, so rows end
    # at different steps (and a dropped row must not disturb the others).
    policy.eos_ids = policy.eos_ids | {policy.generate(prompts[-1:], student=True, max_new_tokens=3)[0][2]}
    for student in (True, False):
        ours = policy.generate(prompts, student=student, n=2, max_new_tokens=12)
        for i, prompt in enumerate(prompts):
            with torch.no_grad(), nullcontext() if student else policy.teacher():
                row = policy.model.generate(
                    input_ids=torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=eos
                )[0, len(prompt) :].tolist()  # fmt: skip
            cut = next((j for j, t in enumerate(row) if t in policy.eos_ids), len(row))
            assert ours[2 * i] == ours[2 * i + 1] == row[:cut] + ([eos] if cut < len(row) else [])
    lengths = {len(c) for c in policy.generate(prompts, student=True, max_new_tokens=12)}
    assert len(lengths) > 1, "the rows must end at different steps for this test to mean anything"


def test_sampling_draws_from_the_tempered_top_k(tiny_model: Path) -> None:
    """A sampled token follows softmax(top-k logits / temperature): no token outside the top k, and the top
    k's frequencies match their probabilities (4,000 draws: 4 standard errors is under 0.035)."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4), precision="fp32")
    policy.top_k = 5
    prompt = policy.chat_ids([{"role": "user", "content": "Name three colours, please."}])
    with torch.no_grad():
        logits = policy.completion_logits([prompt], [[0]], student=True)[0][0, 0]
    values, indices = (logits / 0.7).topk(5)
    expected = dict(zip(indices.tolist(), values.softmax(-1).tolist(), strict=True))
    torch.manual_seed(0)
    draws = [row[0] for row in policy.generate([prompt], student=True, n=4000, temperature=0.7, max_new_tokens=1)]
    assert set(draws) <= set(expected)
    for token, p in expected.items():
        assert abs(draws.count(token) / len(draws) - p) < 0.035, (token, p)


def test_scoring_reads_the_shared_prompt_start_once_with_the_same_logits_and_gradients(tiny_model: Path) -> None:
    """Training rows all start with the chat template's system turn; it goes through the model once and every
    row continues from its cache. The logits, and the expert's gradient through that shared cache, must be
    those of reading every row whole."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4), precision="fp32")
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
