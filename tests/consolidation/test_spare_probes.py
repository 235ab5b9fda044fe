"""A small sleep's gate gets more held-out probes from the teacher's spare questions, one statement at a time."""

from __future__ import annotations

from consolidation.sleep import spare_probes
from consolidation.targets import Asked


def test_spares_are_taken_in_turn_up_to_the_number_wanted() -> None:
    a1, a2, b1 = Asked("A1?", "x"), Asked("A2?", "x"), Asked("B1?", None)
    assert spare_probes([[a1, a2], [b1], []], 2) == [[a1], [b1], []]  # each statement's first spare first
    assert spare_probes([[a1, a2], [b1], []], 5) == [[a1, a2], [b1], []]  # no more than there are
    assert spare_probes([[a1, a2], [b1]], 0) == [[], []]  # enough probes already: training's questions only
    assert spare_probes([[a1], [b1]], -3) == [[], []]
