"""Control probes: each suite probe asked with an untold cue of the same shape; a right answer whose control
states the same value counts as a guess (pure logic)."""

from __future__ import annotations

import random
import re

from bench.controls import controls, decoy, score_controls
from bench.suite import Fact, Probe, _Names, generate


def test_every_probe_names_its_cue_and_its_control_an_untold_one_of_the_same_shape() -> None:
    # One sleep's facts of a longer run: no control asks a value another sleep tells.
    facts = generate(5, 16)
    items = controls(facts[:8], 5, facts)
    told = " ".join(" ".join(f.turns) for f in facts).lower()
    assert len(items) == sum(len(f.probes) for f in facts[:8])
    for _, p, q in items:
        pre, post = p.question.split(p.cue, 1)
        assert q.startswith(pre) and q.endswith(post)
        swapped = q[len(pre) : len(q) - len(post)]
        assert swapped != p.cue and swapped.lower() not in told
    assert items == controls(generate(5, 16)[:8], 5, generate(5, 16))  # reproducible


def test_a_decoy_keeps_the_cues_shape() -> None:
    rng = random.Random(0)
    names = _Names(rng)
    assert re.fullmatch(r"[A-Z][a-z]+ \d{1,2}", decoy("April 14", names, rng))
    assert re.fullmatch(r"\d{3}", decoy("176", names, rng)) and decoy("176", names, rng) != "176"
    assert re.fullmatch(r"[a-z]+-\d+", decoy("loundves-72", names, rng))
    gala, room = decoy("Kroxhea Gala", names, rng), decoy("Room Pethgreck", names, rng)
    assert gala.endswith(" Gala") and gala != "Kroxhea Gala" and room.startswith("Room ") and room != "Room Pethgreck"
    person = decoy("Vacknick Reango", names, rng).split()
    assert len(person) == 2 and "Vacknick" not in person and "Reango" not in person


def test_a_right_answer_whose_control_names_the_same_value_is_a_guess() -> None:
    fact = Fact("f", "date", ("the Kroxhea Gala takes place on April 14",),
                (Probe("Which event is on April 14?", "Kroxhea", "reverse", "April 14"),
                 Probe("When is the Kroxhea Gala?", "April 14", "forward", "Kroxhea Gala")))  # fmt: skip
    items = [(fact, fact.probes[0], "Which event is on May 2?"), (fact, fact.probes[1], "When is the Brisk Gala?")]
    answers = ["The Kroxhea Gala.", "It is on April 14."]
    out = score_controls(answers, ["The Kroxhea Gala, on May 2.", "I don't know that gala."], items)
    assert out["all"]["right"]["correct"] == 2 and out["all"]["guessed"]["correct"] == 1
    assert out["reverse"]["discriminated"]["correct"] == 0 and out["forward"]["discriminated"]["correct"] == 1
    assert out["hits"] == [False, True]  # per probe, for the paired closed-book over in-context ratio


def test_several_draws_ask_other_untold_cues_and_any_guess_counts() -> None:
    facts = generate(5, 8)
    first, second = controls(facts, 5, draw=0), controls(facts, 5, draw=1)
    assert [p for _, p, _ in first] == [p for _, p, _ in second]  # the same probes, in the same order
    assert sum(a != b for (_, _, a), (_, _, b) in zip(first, second, strict=True)) > len(first) // 2
    assert first == controls(generate(5, 8), 5)  # draw 0 is what the recorded runs asked

    fact = Fact("f", "date", ("the Kroxhea Gala takes place on April 14",),
                (Probe("Which event is on April 14?", "Kroxhea", "reverse", "April 14"),))  # fmt: skip
    items = [(fact, fact.probes[0], "Which event is on May 2?")]
    one_lucky = score_controls(["The Kroxhea Gala."], [["No idea.", "The Kroxhea Gala."]], items)
    assert one_lucky["all"]["guessed"]["correct"] == 1 and one_lucky["hits"] == [False]
    assert score_controls(["The Kroxhea Gala."], [["No idea.", "Nothing then."]], items)["hits"] == [True]
