"""A small sleep's gate gets more held-out probes from the teacher's spare questions, one statement at a time."""

from __future__ import annotations

from consolidation.sleep import probe_count, spare_probes, top_up
from consolidation.targets import Asked


def test_spares_are_taken_in_turn_up_to_the_number_wanted() -> None:
    a1, a2, b1 = Asked("A1?", "x"), Asked("A2?", "x"), Asked("B1?", None)
    assert spare_probes([[a1, a2], [b1], []], 2) == [[a1], [b1], []]  # each statement's first spare first
    assert spare_probes([[a1, a2], [b1], []], 5) == [[a1, a2], [b1], []]  # no more than there are
    assert spare_probes([[a1, a2], [b1]], 0) == [[], []]  # enough probes already: training's questions only
    assert spare_probes([[a1], [b1]], -3) == [[], []]


def test_probes_counted_as_prepare_holds_them_out() -> None:
    a, b, c = Asked("A?", "x"), Asked("B?", "x"), Asked("C?", "x")
    # One held out per statement with two of its first two questions; every question past them a spare.
    assert probe_count([[a, b, c], [a], []], n=2, held=1) == 2
    assert probe_count([[a, b], [a, b]], n=2, held=1) == 2


def test_top_up_asks_again_only_for_the_statements_short_of_questions() -> None:
    a, b, c, d = Asked("A?", "x"), Asked("B?", "x"), Asked("C?", "y"), Asked("D?", None)
    asked_for: list[list[int]] = []

    def ask(short: list[int]) -> list[list[Asked]]:
        asked_for.append(short)
        return [[Asked("a?", "x"), c, d] for _ in short]  # "a?" repeats "A?": not a new question

    assert top_up([[a, b], [a], []], 2, ask) == [[a, b], [a, c], [Asked("a?", "x"), c]]
    assert asked_for == [[1, 2]]
    assert top_up([[a, b]], 2, ask) == [[a, b]] and asked_for == [[1, 2]]  # none short: nothing sampled
