"""Drift is measured on prompts that share no template with anything a sleep trains on."""

from __future__ import annotations

from consolidation.anchors import ANCHOR_PROMPTS, MONITOR_PROMPTS, REPLAY_PROMPTS, TASK_REPLAY
from consolidation.targets import KEYED_TEMPLATES


def opening(prompt: str) -> str:
    return " ".join(prompt.lower().replace("{}", "x").split()[:3])


def test_no_anchor_opens_like_a_replay_prompt_or_a_keyed_question() -> None:
    trained = {opening(p) for p in (*REPLAY_PROMPTS, *TASK_REPLAY)} | {opening(t) for t in KEYED_TEMPLATES}
    shared = [a for a in ANCHOR_PROMPTS if opening(a) in trained]
    assert shared == [], shared
    assert not set(ANCHOR_PROMPTS) & set(REPLAY_PROMPTS)


def test_monitor_prompts_share_no_template_with_training_or_the_gate() -> None:
    """The drift budget watches prompts that neither training nor the gate uses: training cannot fit them, and
    the gate's anchor KL stays a check independent of what stopped training."""
    others = {opening(p) for p in (*REPLAY_PROMPTS, *TASK_REPLAY, *ANCHOR_PROMPTS)} | {
        opening(t) for t in KEYED_TEMPLATES
    }
    assert [m for m in MONITOR_PROMPTS if opening(m) in others] == []
    assert not set(MONITOR_PROMPTS) & (set(REPLAY_PROMPTS) | set(ANCHOR_PROMPTS))


def test_the_audit_prompts_are_used_by_nothing_that_trains_or_gates() -> None:
    """bench/drift_where.py's audit set checks that lower anchor KL means lower drift, not fitted anchors."""
    from bench.drift_where import AUDIT_PROMPTS

    used = {opening(p) for p in (*REPLAY_PROMPTS, *TASK_REPLAY, *ANCHOR_PROMPTS, *MONITOR_PROMPTS)}
    assert [a for a in AUDIT_PROMPTS if opening(a) in used | {opening(t) for t in KEYED_TEMPLATES}] == []
