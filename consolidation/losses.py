"""Loss functions of the generalized distillation, as pure tensor functions.

Shapes: logits are (batch, tokens, vocab); `mask` is (batch, tokens), 1 where a token counts (completion
tokens), 0 elsewhere (prompt, padding). Each returns a scalar: the mean over counted tokens (or sequences).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_T || p_S) per token over the full vocabulary, on teacher-generated sequences (mode-covering:
    the student learns everything the teacher would say, the off-policy half of the mix).

        sum_v p_T(v) (log p_T(v) - log p_S(v))
    """
    return _masked_mean(forward_kl_per_token(teacher_logits, student_logits), mask)


def forward_kl_per_token(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_T || p_S) at each position, (B, T): what `forward_kl` averages (bench/drift_where.py reads it whole)."""
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    s = F.log_softmax(student_logits.float(), dim=-1)
    return (t.exp() * (t - s)).sum(-1)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_S || p_T) per token, exact over the vocabulary at the positions of the student's own samples
    (on-policy distillation: the teacher grades every token the student actually produced).

        sum_v p_S(v) (log p_S(v) - log p_T(v))
    """
    s = F.log_softmax(student_logits.float(), dim=-1)
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    per_token = (s.exp() * (s - t)).sum(-1)
    return _masked_mean(per_token, mask)


def sequence_logprob(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean log-probability per counted token of each sequence, (batch,). `logits[:, i]` predicts `tokens[:, i]`."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    m = mask.to(logp.dtype)
    return (logp * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO-style advantage: each reward minus its group's mean, over the group's std (0 for a one-sample
    group or a group whose rewards are all equal: nothing to prefer)."""
    adv = torch.zeros_like(rewards, dtype=torch.float32)
    for g in groups.unique():
        idx = groups == g
        r = rewards[idx].float()
        if r.numel() > 1:
            adv[idx] = (r - r.mean()) / (r.std(unbiased=False) + eps)
    return adv


def policy_gradient(student_seq_logprob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE with given advantages: -E[A * log pi(y|x)] (per-token-mean log-prob, so long answers do not
    dominate). The advantages are constants (no gradient flows into the reward)."""
    return -(advantages.detach() * student_seq_logprob).mean()


def evidence_weights(evidence: torch.Tensor, floor: float, scale: float) -> torch.Tensor:
    """Per-token weight in [floor, 1] from the evidence log p(t | session) - log p(t | no session): tokens the
    session makes likelier (the fact) weigh up to 1, tokens it does not change weigh `floor` (their shape is
    already the model's; replay holds it). `scale` nats of evidence reach full weight."""
    return floor + (1.0 - floor) * (evidence / scale).clamp(0.0, 1.0)


def distill_loss(
    student_logits: torch.Tensor,
    tokens: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logp: torch.Tensor,
    weights: torch.Tensor,
    mask: torch.Tensor,
    hard: float,
) -> torch.Tensor:
    """Distillation along a fixed answer (the session's own statement), per token weighted by the evidence:

        w_t * [ hard * -log p_S(x_t) + (1 - hard) * -sum_{v in top-k} p~_T(v) log p_S(v) ]

    p~_T is the teacher's distribution (with the session in context) renormalised over its top-k tokens: the
    forward KL to the teacher up to a constant. `hard` = 1 is plain cross-entropy on the statement; 0 is pure
    distillation. Shapes: logits (B, T, V); tokens, weights, mask (B, T); topk_* (B, T, k). Mean over counted
    tokens (the weights scale, they do not renormalise, so low-evidence tokens really count less)."""
    logp = F.log_softmax(student_logits.float(), dim=-1)
    hard_nll = -logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    teacher = torch.softmax(topk_logp.float(), dim=-1)
    soft_nll = -(teacher * logp.gather(-1, topk_ids)).sum(-1)
    per_token = weights * (hard * hard_nll + (1.0 - hard) * soft_nll)
    return _masked_mean(per_token, mask)
