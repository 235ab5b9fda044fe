"""The interference watch: earlier facts whose loss rises while a sleep trains, more than the other stored
facts' does, are drawn more often into its steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from consolidation.interference import InterferenceWatch, WatchConfig, answer_nll, boost, span_weights
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import SeedingConfig, seed_knowledge
from consolidation.statements import Statement
from consolidation.targets import Target, attach_teacher, make_target


def test_a_target_is_drawn_more_in_proportion_to_its_rise_and_never_less() -> None:
    cfg = WatchConfig(scale=0.1, cap=16.0)
    assert boost(-0.5, cfg) == 1.0  # rose less than the median stored fact: drawn as before, not less
    assert boost(0.0, cfg) == 1.0
    assert boost(0.1, cfg) == 2.0
    assert boost(0.3, cfg) == pytest.approx(4.0)
    assert boost(50.0, cfg) == 16.0


def _stored(policy: Policy) -> list[Target]:
    facts = [
        ("The locker code is 9130.", "9130", "What is the locker code?"),  # the same kind as the new fact
        ("Mira's cat is called Pebble.", "Pebble", "What is Mira's cat called?"),
        ("The ferry leaves at noon.", "noon", "When does the ferry leave?"),
        ("The museum is on Elm Street.", "Elm Street", "Where is the museum?"),
    ]
    out = []
    for i, (text, span, question) in enumerate(facts):
        st = Statement(f"s{i}", text, (span,), text)
        out.append(make_target(policy, text, (st,), question, "asked"))
    return out


def test_the_watch_singles_out_the_stored_fact_a_new_fact_pulls_on(tiny_model: Path) -> None:
    """A new fact asked as a stored one is, with another value (a new locker code), is learned beside 4 stored
    facts the model already knows. Every stored fact's loss rises some; the watch draws the one it rises most
    for (the one the new fact contradicts) most often, and those that rise less than the median as before.
    (Whether that keeps the default model's earlier facts is measured, not asserted here: docs/BENCHMARKS.md.)"""
    # fp32: which stored fact rises most is a fine numerical margin on the tiny random model. A near-duplicate in
    # wording alone ("What is the locker's code?") was not reliably the most pulled on (the numerics differ
    # between CPUs, and on one the cat's name rose more), and in bf16 the contradicted fact came second.
    policy = Policy(tiny_model, None, ExpertConfig(rank=4), precision="fp32")
    new = Statement("n", "The locker code is 4471.", ("4471",), "The locker code is 4471.")
    target = make_target(policy, new.text, (new,), "What is the locker code?", "asked")
    stored = _stored(policy)
    attach_teacher(policy, [target, *stored])
    # An earlier sleep: the stored facts learned first (the tiny model knows none of them).
    learn = SeedingConfig(steps=48, batch=4, lr=2e-3, onpolicy_every=0, w_replay=0.0, hard=1.0)
    seed_knowledge(policy, stored, [], [], learn)
    before = answer_nll(policy, stored)
    watch = InterferenceWatch(policy, stored, WatchConfig(every=4, scale=0.02))
    assert watch.start == before
    cfg = SeedingConfig(steps=64, batch=1, stored_batch=1, lr=2e-3, onpolicy_every=0, w_replay=0.0, hard=1.0)
    seed_knowledge(policy, [target], stored, [], cfg, after_step=watch.tick)
    assert watch.measurements == 16
    assert all(r > 0 for r in watch.rises), watch.rises  # the new fact pulls on every stored one some
    assert watch.rises[0] == max(watch.rises), watch.rises  # and on the one it contradicts most
    weights = [t.weight for t in stored]
    median = sum(sorted(watch.rises)[1:3]) / 2
    assert weights == [boost(r - median, watch.cfg) for r in watch.rises]
    assert weights[0] == max(weights) > 1.0, weights
    assert sorted(weights)[:2] == [1.0, 1.0], weights  # the two below the median are drawn as before


def test_span_weights_pick_the_tokens_that_state_the_answer(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    text = "The Therthu Festival, with food stalls and a parade, takes place on September 10."
    st = Statement("s", text, ("Therthu Festival", "September 10"), text)
    target = make_target(policy, text, (st,), "When is the Therthu Festival?", "asked")
    weights = span_weights(policy, target)
    assert len(weights) == len(target.answer) and weights[-1] == 0.0  # end of answer: states nothing
    picked = [tok for tok, w in zip(target.answer, weights, strict=True) if w]
    # Only the date: the question already names the festival, so a right answer must state the date.
    assert policy.tokenizer.decode(picked).replace(" ", "") == "September10"
    # An answer that states none of its spans weighs every token.
    bare = Statement("b", "It rained.", ("Oslo",), "It rained.")
    assert span_weights(policy, make_target(policy, "b", (bare,), "Weather?", "asked")) == [1.0] * len(
        make_target(policy, "b", (bare,), "Weather?", "asked").answer
    )


def test_the_spans_watch_measures_the_loss_on_the_answer_tokens_only(tiny_model: Path) -> None:
    """With `tokens="spans"` the watch's loss is the mean over the span tokens: what `answer_nll` gives with
    those tokens' weights, not the whole answer's mean."""
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    stored = _stored(policy)
    watch = InterferenceWatch(policy, stored, WatchConfig(tokens="spans"))
    assert watch.weights is not None
    assert watch.start == answer_nll(policy, stored, weights=[span_weights(policy, t) for t in stored])
    assert watch.start != answer_nll(policy, stored)
