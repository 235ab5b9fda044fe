"""Knowledge Seeding: generalized distillation from the teacher (memory in context) into the student (new
low-rank expert, no context). One step, readable in order:

1. off-policy  - teacher-generated answers, cut to their first sentence, verified against the memory
                 (consolidation/grounding.py), scored by how much the context raises their likelihood and
                 filtered (the teacher's own guesses are not learned), taught by forward KL over the vocabulary;
2. on-policy   - the student samples k answers per prompt; the teacher, with the context, grades every sampled
                 token by reverse KL (exact over the vocabulary);
3. RL imitation - each student sample's reward is the teacher's mean log-likelihood of it (with context);
                 group-relative advantages over the k samples; policy gradient;
4. replay      - anchor prompts answered by the previous model (= teacher view without context), forward KL to
                 it, against forgetting.

loss = w_fkl * L1 + w_rkl * L2 + w_pg * L3 + w_replay * L4, then clip and step. The measured lesson behind
the mix: filtered teacher data injects facts fast but drifts, pure on-policy reverse KL barely moves at this
budget; replay holds generic behaviour in place.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from consolidation.grounding import grounded_part
from consolidation.losses import forward_kl, group_advantages, policy_gradient, reverse_kl, sequence_logprob
from consolidation.policy import Policy
from consolidation.questions import generate_questions, topic_questions
from consolidation.sessions import Memory

T = TypeVar("T")


@dataclass(frozen=True)
class SeedingConfig:
    steps: int = 60
    batch: int = 8  # prompts per step for the off-policy and replay terms (cheap: no sampling)
    onpolicy_batch: int = 2  # of those, prompts the student samples for (the costly part: generation)
    lr: float = 2e-3
    k: int = 4  # student samples per prompt (on-policy group)
    teacher_samples: int = 4  # teacher answers per prompt before filtering (plus the greedy one)
    keep_margin: float = 0.5  # keep teacher answers whose context gain is within this of the best one
    min_support: float = 0.75  # grounding: share of an answer's content words that the memory holds
    min_novel: int = 1  # grounding: memory words an answer must add to its question
    max_new_tokens: int = 40
    temperature: float = 0.8
    w_fkl: float = 1.0
    w_rkl: float = 0.5
    w_pg: float = 0.2
    w_replay: float = 1.0
    clip: float = 1.0
    seed: int = 0


@dataclass
class Example:
    """One prompt of a memory, in both views, with the teacher's kept answers."""

    memory: Memory
    question: str
    student_prompt: list[int]
    teacher_prompt: list[int]
    answers: list[list[int]] = field(default_factory=list)  # grounded, filtered teacher answers (token ids)
    reference: str = ""  # the judge's reference: the best grounded in-context answer, "" if none is grounded


@dataclass
class Anchor:
    prompt: list[int]
    answer: list[int]  # the previous model's greedy answer


@dataclass
class StepLog:
    step: int
    loss: float
    fkl: float
    rkl: float
    pg: float
    replay: float
    reward: float
    seconds: float
    tokens: int


def build_examples(policy: Policy, pairs: list[tuple[Memory, str]], cfg: SeedingConfig) -> list[Example]:
    """Teacher answers per prompt (greedy + sampled, batched over all prompts), each cut to its first sentence
    (or clause), kept only if grounded in the memory, then scored by context gain (log p(a | ctx, q) - log p(a | q), per
    token): an answer the model would give as readily without the context carries no memory. A prompt with no
    grounded answer keeps none and no reference: it is not trained on and not used as a probe."""
    examples = [
        Example(
            memory,
            question,
            policy.chat_ids([{"role": "user", "content": question}]),
            policy.chat_ids([{"role": "user", "content": question}], context=memory.render()),
        )
        for memory, question in pairs
    ]
    prompts = [e.teacher_prompt for e in examples]
    greedy = policy.generate(prompts, student=False, max_new_tokens=cfg.max_new_tokens)
    n = cfg.teacher_samples
    sampled = policy.generate(
        prompts, student=False, n=n, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature
    ) if n > 0 else []  # fmt: skip
    for i, ex in enumerate(examples):
        memory_text = ex.memory.said()
        parts = [
            grounded_part(policy.decode(a), memory_text, ex.question, min_support=cfg.min_support,
                          min_novel=cfg.min_novel)
            for a in [greedy[i], *sampled[i * n : (i + 1) * n]]
        ]  # fmt: skip
        grounded = list(dict.fromkeys(p for p in parts if p))
        if not grounded:
            continue
        candidates = [policy.tokenizer(t, add_special_tokens=False)["input_ids"] for t in grounded]
        gain = _context_gain(policy, ex, candidates).tolist()
        best = max(gain)
        ex.answers = [a for a, g in zip(candidates, gain, strict=True) if g > 0 and g >= best - cfg.keep_margin]
        # The greedy answer is the most reliable reference when it is grounded; else the best grounded one.
        ex.reference = parts[0] or grounded[gain.index(best)]
    return examples


def grounded_questions(
    policy: Policy, memories: list[Memory], n: int, cfg: SeedingConfig, rounds: int = 1, topics: int = 4
) -> list[list[Example]]:
    """Up to n self-generated questions per memory that have a grounded teacher answer, as examples. A 135M
    model writes many questions its teacher cannot answer from the memory (docs/BENCHMARKS.md: 30 of 90 kept),
    and unevenly. Memories still short of n are asked again, with fresh samples, up to `rounds` times in all
    (measured, docs/BENCHMARKS.md: a second round kept 1.5-2.6x the answers at 1.7x the preparation time,
    recall within run-to-run noise, no more than topic questions reach at one round). The first round
    also asks up to `topics` "What do you know about X?" questions per memory (questions.topic_questions)."""
    found: list[list[Example]] = [[] for _ in memories]
    asked: list[set[str]] = [set() for _ in memories]
    for round_ in range(rounds):
        short = [i for i in range(len(memories)) if len(found[i]) < n]
        if not short:
            break
        fresh = generate_questions(policy, [memories[i] for i in short], n, max_new_tokens=cfg.max_new_tokens)
        if round_ == 0 and topics > 0:
            fresh = [topic_questions(memories[i], topics) + qs for i, qs in zip(short, fresh, strict=True)]
        owners: list[int] = []
        pairs: list[tuple[Memory, str]] = []
        for i, questions in zip(short, fresh, strict=True):
            for q in questions:
                if q.lower() not in asked[i]:
                    asked[i].add(q.lower())
                    owners.append(i)
                    pairs.append((memories[i], q))
        for i, e in zip(owners, build_examples(policy, pairs, cfg), strict=True):
            if e.reference and len(found[i]) < n:
                found[i].append(e)
    return found


def build_anchors(policy: Policy, prompts: list[str], max_new_tokens: int) -> list[Anchor]:
    ids = [policy.chat_ids([{"role": "user", "content": p}]) for p in prompts]
    answers = policy.generate(ids, student=False, max_new_tokens=max_new_tokens)
    return [Anchor(p, a) for p, a in zip(ids, answers, strict=True) if a]


def seed_knowledge(
    policy: Policy,
    examples: list[Example],
    anchors: list[Anchor],
    cfg: SeedingConfig,
    on_step: Callable[[StepLog], None] | None = None,
) -> list[StepLog]:
    rng = random.Random(cfg.seed)
    params = policy.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    logs = []
    usable = [e for e in examples if e.answers] or examples
    for step in range(1, cfg.steps + 1):
        start = time.perf_counter()
        batch = balanced_sample(rng, usable, lambda e: e.memory.session_id, cfg.batch)
        tokens = 0

        # 1. off-policy: filtered teacher answers, forward KL(teacher with context || student without).
        off = [(e, rng.choice(e.answers)) for e in batch if e.answers] if cfg.w_fkl > 0 else []
        fkl = torch.zeros(())
        if off:
            t_logits, mask, _ = policy.completion_logits(
                [e.teacher_prompt for e, _ in off], [a for _, a in off], student=False
            )
            s_logits, _, _ = policy.completion_logits(
                [e.student_prompt for e, _ in off], [a for _, a in off], student=True
            )
            fkl = forward_kl(t_logits, s_logits, mask)
            tokens += int(mask.sum())

        # 2 + 3. on-policy: student samples, graded token by token (reverse KL) and as sequences (reward).
        on = batch[: cfg.onpolicy_batch] if cfg.w_rkl > 0 or cfg.w_pg > 0 else []
        samples = policy.generate(
            [e.student_prompt for e in on], student=True, n=cfg.k,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        )  # fmt: skip
        owners = [e for e in on for _ in range(cfg.k)]
        keep = [i for i, s in enumerate(samples) if s]
        rkl, pg, reward = torch.zeros(()), torch.zeros(()), 0.0
        if keep:
            owners_k = [owners[i] for i in keep]
            samples_k = [samples[i] for i in keep]
            groups = torch.tensor([on.index(e) for e in owners_k])
            t_logits, mask, toks = policy.completion_logits(
                [e.teacher_prompt for e in owners_k], samples_k, student=False
            )
            s_logits, _, _ = policy.completion_logits([e.student_prompt for e in owners_k], samples_k, student=True)
            rkl = reverse_kl(s_logits, t_logits, mask)
            rewards = sequence_logprob(t_logits, toks, mask)
            pg = policy_gradient(sequence_logprob(s_logits, toks, mask), group_advantages(rewards, groups))
            reward = float(rewards.mean())
            tokens += int(mask.sum())

        # 4. replay: anchors answered by the previous model, forward KL to it.
        replay, replay_tokens = (
            replay_loss(policy, anchors, rng, cfg.batch) if cfg.w_replay > 0 else (torch.zeros(()), 0)
        )
        tokens += replay_tokens

        loss = cfg.w_fkl * fkl + cfg.w_rkl * rkl + cfg.w_pg * pg + cfg.w_replay * replay
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
        log = StepLog(step, loss.item(), fkl.item(), rkl.item(), pg.item(), replay.item(), reward,
                      time.perf_counter() - start, tokens)  # fmt: skip
        logs.append(log)
        if on_step:
            on_step(log)
    return logs


def balanced_sample(rng: random.Random, items: list[T], owner: Callable[[T], str], size: int) -> list[T]:
    """Up to `size` distinct items spread evenly over their owners (memories), owners in random order: a
    memory that few questions cover is trained as often as one that many do (measured: same recall as uniform
    sampling at the default budget, docs/BENCHMARKS.md; it keeps a session's weight independent of luck)."""
    pools: dict[str, list[T]] = {}
    for item in items:
        pools.setdefault(owner(item), []).append(item)
    queues = [rng.sample(pool, len(pool)) for pool in pools.values()]
    rng.shuffle(queues)
    out: list[T] = []
    while len(out) < size and any(queues):
        for queue in queues:
            if queue and len(out) < size:
                out.append(queue.pop())
    return out


def replay_loss(policy: Policy, anchors: list[Anchor], rng: random.Random, batch: int) -> tuple[torch.Tensor, int]:
    """Forward KL(previous model || student) on a sample of anchors and their previous answers; and its token
    count. The previous model is the teacher view without context. Zero when there are no anchors."""
    if not anchors:
        return torch.zeros(()), 0
    return kl_to_previous(policy, rng.sample(anchors, min(batch, len(anchors))))


def kl_to_previous(policy: Policy, anchors: list[Anchor]) -> tuple[torch.Tensor, int]:
    """Mean per-token KL(previous model || student) over the anchors' previous answers, and the token count:
    the replay loss when trained on, the gate's drift figure when measured."""
    prompts, answers = [a.prompt for a in anchors], [a.answer for a in anchors]
    prev, mask, _ = policy.completion_logits(prompts, answers, student=False)
    now, _, _ = policy.completion_logits(prompts, answers, student=True)
    return forward_kl(prev, now, mask), int(mask.sum())


@torch.no_grad()
def _context_gain(policy: Policy, ex: Example, answers: list[list[int]]) -> torch.Tensor:
    with_ctx, mask, toks = policy.completion_logits([ex.teacher_prompt] * len(answers), answers, student=False)
    without, _, _ = policy.completion_logits([ex.student_prompt] * len(answers), answers, student=False)
    return sequence_logprob(with_ctx, toks, mask) - sequence_logprob(without, toks, mask)
