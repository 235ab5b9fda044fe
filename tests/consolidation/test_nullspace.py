"""The null-space projection on the tiny model: training on a fact with the expert kept off the generic inputs'
leading directions moves the model's answers on those generic sequences less than the same training without
it, and teaches the fact about as well."""

from __future__ import annotations

from pathlib import Path

import torch

from consolidation.anchors import MONITOR_PROMPTS
from consolidation.drift import monitor_kl
from consolidation.losses import sequence_logprob
from consolidation.nullspace import NullSpaceConfig, generic_projector
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import SeedingConfig, seed_knowledge
from consolidation.statements import Statement
from consolidation.targets import Target, attach_teacher, make_target, replay_targets


def _answer_logprob(policy: Policy, target: Target) -> float:
    with torch.no_grad():
        logits, mask, toks = policy.completion_logits([target.student_prompt], [target.answer], student=True)
        return float(sequence_logprob(logits, toks, mask)[0])


def _train(tiny_model: Path, projected: bool) -> tuple[float, float]:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    fact = Statement("s1", "The vault code is 4471.", ("4471",), "The vault code is 4471.")
    target = make_target(policy, fact.text, (fact,), "What is the vault code?", "asked")
    attach_teacher(policy, [target])
    generic = replay_targets(policy, list(MONITOR_PROMPTS), max_new_tokens=12)
    project = generic_projector(policy, generic, NullSpaceConfig(energy=0.9)).apply if projected else None
    before = _answer_logprob(policy, target)
    cfg = SeedingConfig(steps=24, batch=1, lr=2e-3, onpolicy_every=0, w_replay=0.0, hard=1.0)
    seed_knowledge(policy, [target], [], [], cfg, after_step=project)
    return monitor_kl(policy, generic), _answer_logprob(policy, target) - before


def test_projected_training_learns_the_fact_and_leaves_generic_answers_closer(tiny_model: Path) -> None:
    free_drift, free_gain = _train(tiny_model, projected=False)
    kept_drift, kept_gain = _train(tiny_model, projected=True)
    assert free_drift > 0.01, free_drift  # the setting this test needs: unconstrained training drifts
    # Measured 0.028 vs 0.046 here (on the default model's tuning seed the gate's anchors: 0.053 vs 0.090).
    assert kept_drift < 0.75 * free_drift, (kept_drift, free_drift)
    # Mean log-prob per answer token, in nats: the fact is learned about as well (measured 2.05 vs 2.09).
    assert kept_gain > max(1.0, 0.8 * free_gain), (kept_gain, free_gain)


def test_layers_fed_the_same_input_share_one_projector(tiny_model: Path) -> None:
    """q/k/v read one tensor, gate/up another: one eigendecomposition each. o_proj and down_proj read their own
    (a freed input's id reused by the next layer's input must not merge them)."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    generic = replay_targets(policy, list(MONITOR_PROMPTS[:3]), max_new_tokens=6)
    projector = generic_projector(policy, generic, NullSpaceConfig(energy=0.9))
    names = [n for n, m in policy.model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    p = {n: proj for n, (_, proj) in zip(names, projector.pairs, strict=True)}
    layers = {n.rsplit(".", 2)[0] for n in names}
    assert len(layers) == 2  # the tiny model's
    for layer in layers:
        attn, mlp = f"{layer}.self_attn", f"{layer}.mlp"
        assert p[f"{attn}.q_proj"] is p[f"{attn}.k_proj"] is p[f"{attn}.v_proj"]
        assert p[f"{mlp}.gate_proj"] is p[f"{mlp}.up_proj"]
        assert p[f"{attn}.o_proj"] is not p[f"{attn}.q_proj"]
        assert p[f"{mlp}.down_proj"] is not p[f"{mlp}.gate_proj"]


def _train_beside_stored(tiny_model: Path, protect: bool) -> tuple[float, float]:
    """A new fact learned while an earlier sleep's fact of the same kind is stored: how far the stored fact's
    answer moves (mean log-prob per token, nats) and how much the new one is learned."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    new = Statement("s2", "The vault code is 4471.", ("4471",), "The vault code is 4471.")
    old = Statement("s1", "The locker code is 9130.", ("9130",), "The locker code is 9130.")
    target = make_target(policy, new.text, (new,), "What is the vault code?", "asked")
    stored = make_target(policy, old.text, (old,), "What is the locker code?", "asked")
    attach_teacher(policy, [target, stored])
    generic = replay_targets(policy, list(MONITOR_PROMPTS), max_new_tokens=12)
    cfg = NullSpaceConfig(energy=0.9)
    project = generic_projector(policy, generic, cfg, [stored] if protect else None).apply
    kept_before, new_before = _answer_logprob(policy, stored), _answer_logprob(policy, target)
    seed = SeedingConfig(steps=24, batch=1, lr=2e-3, onpolicy_every=0, w_replay=0.0, hard=1.0)
    seed_knowledge(policy, [target], [], [], seed, after_step=project)
    return abs(_answer_logprob(policy, stored) - kept_before), _answer_logprob(policy, target) - new_before


def test_stored_facts_kept_out_of_the_expert_move_less_when_a_same_kind_fact_is_learned(tiny_model: Path) -> None:
    """The retention run's failure (docs/BENCHMARKS.md, "Retention over sequential sleeps"): a new tower's height
    overwrote an earlier tower's. Protecting the stored fact's inputs keeps its answer where it was."""
    free_move, free_gain = _train_beside_stored(tiny_model, protect=False)
    kept_move, kept_gain = _train_beside_stored(tiny_model, protect=True)
    assert free_move > 0.05, free_move  # the setting this test needs: the new fact moves the stored one
    assert kept_move < 0.75 * free_move, (kept_move, free_move)  # measured 0.47 vs 0.71
    assert kept_gain > 0.8 * free_gain, (kept_gain, free_gain)  # and the new fact is learned as well (2.00 vs 2.05)
