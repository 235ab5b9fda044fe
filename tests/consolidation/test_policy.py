"""Batched sampling must give each prompt its own completions, whatever the chunking and length-sorting."""

from __future__ import annotations

from pathlib import Path

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
