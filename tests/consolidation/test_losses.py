"""Loss units on toy distributions: zero on identical inputs, exact values, masks, gradient flow."""

from __future__ import annotations

import math

import torch

from consolidation.losses import forward_kl, group_advantages, policy_gradient, reverse_kl, sequence_logprob


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs).log().view(1, 1, -1)


def test_identical_distributions_give_zero() -> None:
    x = torch.randn(2, 5, 11)
    mask = torch.ones(2, 5)
    assert forward_kl(x, x, mask).abs() < 1e-6
    assert reverse_kl(x, x, mask).abs() < 1e-6


def test_exact_values_on_a_toy_distribution() -> None:
    p, q = [0.5, 0.5], [0.9, 0.1]
    mask = torch.ones(1, 1)
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    # forward_kl(teacher=p, student=q) = KL(p||q); reverse_kl(student=q, teacher=p) = KL(q||p)
    assert math.isclose(float(forward_kl(logits_of(p), logits_of(q), mask)), kl_pq, rel_tol=1e-5)
    assert math.isclose(float(reverse_kl(logits_of(q), logits_of(p), mask)), kl_qp, rel_tol=1e-5)
    # Logits are shift-invariant.
    assert math.isclose(float(forward_kl(logits_of(p) + 3, logits_of(q), mask)), kl_pq, rel_tol=1e-5)


def test_masked_tokens_count_for_nothing() -> None:
    t, s = torch.randn(1, 4, 7), torch.randn(1, 4, 7)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    s2 = s.clone()
    s2[:, 2:] = torch.randn(1, 2, 7) * 10
    assert torch.allclose(forward_kl(t, s, mask), forward_kl(t, s2, mask))
    assert torch.allclose(reverse_kl(s, t, mask), reverse_kl(s2, t, mask))


def test_kl_gradient_reaches_only_the_student() -> None:
    t = torch.randn(1, 3, 5, requires_grad=True)
    s = torch.randn(1, 3, 5, requires_grad=True)
    forward_kl(t.detach(), s, torch.ones(1, 3)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_group_advantages_and_policy_gradient() -> None:
    rewards = torch.tensor([1.0, 0.0, 5.0, 5.0, 2.0])
    groups = torch.tensor([0, 0, 1, 1, 2])
    adv = group_advantages(rewards, groups)
    assert torch.allclose(adv[:2], torch.tensor([1.0, -1.0]), atol=1e-4)
    assert torch.all(adv[2:] == 0)  # equal rewards and a singleton group carry no preference
    logits = torch.zeros(2, 3, 4, requires_grad=True)
    tokens = torch.tensor([[1, 2, 3], [0, 0, 0]])
    lp = sequence_logprob(logits, tokens, torch.ones(2, 3))
    assert torch.allclose(lp, torch.full((2,), math.log(0.25)))
    policy_gradient(lp, torch.tensor([1.0, -1.0])).backward()
    assert logits.grad is not None
    # Gradient ascent on the preferred sequence's tokens: its token logits get a negative loss gradient.
    assert logits.grad[0, 0, 1] < 0 and logits.grad[1, 0, 0] > 0


def test_evidence_weights_span_floor_to_one() -> None:
    from consolidation.losses import evidence_weights

    w = evidence_weights(torch.tensor([-3.0, 0.0, 1.0, 2.0, 9.0]), floor=0.25, scale=2.0)
    assert torch.allclose(w, torch.tensor([0.25, 0.25, 0.625, 1.0, 1.0]))


def test_distill_loss_limits_and_weights() -> None:
    from consolidation.losses import distill_loss

    torch.manual_seed(0)
    student = torch.randn(2, 3, 6)
    tokens = torch.tensor([[1, 2, 3], [4, 5, 0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    ones = torch.ones(2, 3)
    teacher = torch.randn(2, 3, 6)
    top = teacher.log_softmax(-1).topk(6, dim=-1)  # k = vocabulary: the soft term is the full cross-entropy
    hard_only = distill_loss(student, tokens, top.indices, top.values, ones, mask, hard=1.0)
    assert math.isclose(float(hard_only), float(-sequence_logprob(student, tokens, mask).mul(mask.sum(-1)).sum() / 5),
                        rel_tol=1e-5)  # fmt: skip
    soft_only = distill_loss(student, tokens, top.indices, top.values, ones, mask, hard=0.0)
    entropy = -(teacher.softmax(-1) * teacher.log_softmax(-1)).sum(-1)
    assert math.isclose(float(soft_only), float(forward_kl(teacher, student, mask) + (entropy * mask).sum() / 5),
                        rel_tol=1e-5)  # fmt: skip
    # A token of weight 0 counts for nothing; halving every weight halves the loss.
    w = ones.clone()
    w[0, 0] = 0.0
    changed = student.clone()
    changed[0, 0] = torch.randn(6) * 10
    assert torch.allclose(distill_loss(student, tokens, top.indices, top.values, w, mask, 0.5),
                          distill_loss(changed, tokens, top.indices, top.values, w, mask, 0.5))  # fmt: skip
    assert torch.allclose(distill_loss(student, tokens, top.indices, top.values, ones / 2, mask, 0.5),
                          distill_loss(student, tokens, top.indices, top.values, ones, mask, 0.5) / 2)  # fmt: skip
