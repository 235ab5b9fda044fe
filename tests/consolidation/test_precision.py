"""Mixed precision on a CPU (opt-in, `SLEEPD_SLEEP_PRECISION=auto`): the sleep trains and samples in bf16 with
fp32 trainable weights, and nothing that leaves the sleep (the adapter, the gate's judgement) is bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from consolidation.policy import ExpertConfig, Policy, mixed_precision

QUESTIONS = ["Hi", "What is the capital of a country far away from here?", "Name three colours, please."]
ANSWERS = [[5, 6, 7], [8, 9], [9, 10, 11, 12, 13]]


def _expert(policy: Policy, std: float) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, std)
            elif "lora_A" in name:
                p.normal_(0.0, 0.1)


def _loss_and_grad(policy: Policy) -> tuple[float, torch.Tensor]:
    prompts = [policy.chat_ids([{"role": "user", "content": q}]) for q in QUESTIONS]
    policy.model.zero_grad(set_to_none=True)
    logits, mask, toks = policy.completion_logits(prompts, ANSWERS, student=True)
    assert logits.dtype == torch.float32  # losses read fp32 logits whatever the arithmetic
    picked = logits.log_softmax(-1).gather(-1, toks.unsqueeze(-1)).squeeze(-1)
    loss = -(picked * mask).sum() / mask.sum()
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in policy.trainable_parameters()])


def test_auto_is_mixed_only_on_a_cpu_and_never_when_fp32_is_asked() -> None:
    assert not mixed_precision("fp32", torch.device("cpu"))
    assert mixed_precision("bf16", torch.device("cpu"))
    assert not mixed_precision("auto", torch.device("cuda"))  # a GPU loads the whole model in bf16 instead


def test_mixed_precision_trains_fp32_weights_along_the_fp32_gradient(tiny_model: Path, tmp_path: Path) -> None:
    full = Policy(tiny_model, None, ExpertConfig(rank=4), precision="fp32")
    mixed = Policy(tiny_model, None, ExpertConfig(rank=4), precision="bf16")
    assert not full.mixed and mixed.mixed
    # What trains stays fp32 (bf16 steps of lr 1e-3 would round away); the frozen weights are stored in bf16.
    assert {p.dtype for p in mixed.trainable_parameters()} == {torch.float32}
    frozen = {p.dtype for n, p in mixed.model.named_parameters() if "proj.base_layer" in n}
    assert frozen == {torch.bfloat16}
    assert mixed.model.get_input_embeddings().weight.dtype == torch.float32  # the residual stream stays fp32

    for policy in (full, mixed):
        _expert(policy, 0.05)
    loss_full, grad_full = _loss_and_grad(full)
    loss_mixed, grad_mixed = _loss_and_grad(mixed)
    assert abs(loss_mixed - loss_full) < 0.02 * abs(loss_full)
    assert torch.nn.functional.cosine_similarity(grad_full, grad_mixed, 0) > 0.99

    # The adapter a sleep exports is fp32, whatever it trained in.
    mixed.save_expert(tmp_path / "adapter")
    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert tensors and {t.dtype for t in tensors.values()} == {torch.float32}


def test_a_fresh_expert_leaves_the_student_equal_to_the_teacher_in_mixed_precision(tiny_model: Path) -> None:
    """B = 0: the student is the teacher without context, so the drift a sleep starts from is exactly zero in
    bf16 too (the two views share the same bf16 weights and the same arithmetic)."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4), precision="bf16")
    prompts = [policy.chat_ids([{"role": "user", "content": q}]) for q in QUESTIONS]
    with torch.no_grad():
        student = policy.completion_logits(prompts, ANSWERS, student=True)[0]
        teacher = policy.completion_logits(prompts, ANSWERS, student=False)[0]
    assert torch.equal(student, teacher)
    greedy = policy.generate(prompts, student=True, max_new_tokens=4)
    assert greedy == policy.generate(prompts, student=False, max_new_tokens=4)


def test_evaluation_reads_the_fp32_weights_vllm_serves(tiny_model: Path, tmp_path: Path) -> None:
    trained = Policy(tiny_model, None, ExpertConfig(rank=4), precision="bf16")
    _expert(trained, 0.05)
    trained.save_expert(tmp_path / "adapter")
    served = Policy.serving(tiny_model, {"candidate": tmp_path / "adapter"})
    assert not served.mixed
    assert {p.dtype for p in served.model.parameters()} == {torch.float32}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sampling_works_in_either_precision(tiny_model: Path, precision: str) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4), precision=precision)  # type: ignore[arg-type]
    prompts = [policy.chat_ids([{"role": "user", "content": q}]) for q in QUESTIONS]
    rows = policy.generate(prompts, student=True, n=2, max_new_tokens=5, temperature=0.8)
    assert len(rows) == 6 and all(1 <= len(r) <= 5 for r in rows)
