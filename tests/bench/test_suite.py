"""The procedural fact suite: reproducible by seed, distinct names, strict scoring, and the probe-leak check."""

from __future__ import annotations

from bench.learning import leaks, wilson
from bench.suite import KINDS, Probe, generate, is_correct


def test_same_seed_same_suite_other_seed_other_names() -> None:
    a, b, c = generate(3, 40), generate(3, 40), generate(4, 40)
    assert a == b and a != c
    assert {f.kind for f in a} == set(KINDS)
    assert all(len(f.probes) == 4 and {p.direction for p in f.probes} == {"forward", "reverse"} for f in a)
    values = [p.expected for f in a for p in f.probes if p.direction == "forward"]
    assert len(set(values)) == len(values) // 2  # two forward probes per fact, no value shared between facts


def test_strict_scoring() -> None:
    probe = Probe("Which server?", "quokka-3", "forward")
    assert is_correct("It is quokka-3.", probe)
    assert not is_correct("It is quokka-35.", probe)  # not inside another word
    assert not is_correct("The meeting is at 17 pm", Probe("When?", "7 pm", "forward"))
    room = Probe("Where?", "Room Veldo", "forward")
    assert is_correct("It moved to room Veldo, not Room Shax.", room, wrong=("Room Shax",))
    assert not is_correct("Room Shax or Room Veldo.", room, wrong=("Room Shax",))  # beside a wrong value


def test_probe_leaks_and_intervals() -> None:
    assert leaks(["What is the code for Brin Depot?"], ["what is the CODE for Brin Depot?"])
    assert leaks(["Which code opens Brin Depot?"], ["Brin Depot: which code opens it?"])  # same content words
    assert not leaks(["Which code opens Brin Depot?"], ["What do you know about Brin Depot?"])
    lo, hi = wilson(8, 16)
    assert lo < 0.5 < hi and (lo, hi) == (0.28, 0.72)
