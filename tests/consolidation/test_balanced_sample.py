"""Training batches spread evenly over memories; drawn transfer targets bring their twins (pure logic)."""

from __future__ import annotations

import random
from collections import Counter

from consolidation.seeding import balanced_sample, twins
from consolidation.targets import Target


def test_a_thinly_covered_memory_is_trained_as_often_as_a_well_covered_one() -> None:
    items = [("rich", i) for i in range(30)] + [("thin", 0), ("thin", 1)]
    rng = random.Random(0)
    counts: Counter[str] = Counter()
    for _ in range(200):
        batch = balanced_sample(rng, items, lambda x: x[0], 4)
        assert len(batch) == 4 and len(set(batch)) == 4  # distinct within a batch
        counts.update(owner for owner, _ in batch)
    # Uniform sampling would give "thin" about 1/16 of the slots; balanced gives it half of them.
    assert counts["thin"] == counts["rich"] == 400


def test_every_owner_appears_before_any_repeats() -> None:
    items = [(owner, i) for owner in "abcde" for i in range(3)]
    batch = balanced_sample(random.Random(1), items, lambda x: x[0], 5)
    assert sorted(owner for owner, _ in batch) == list("abcde")


def test_a_batch_larger_than_the_items_takes_them_all() -> None:
    items = [("a", 0), ("b", 0), ("b", 1)]
    assert sorted(balanced_sample(random.Random(2), items, lambda x: x[0], 10)) == sorted(items)
    assert balanced_sample(random.Random(2), [], lambda x: x[0], 4) == []


def test_drawn_transfer_targets_bring_their_new_twins_once() -> None:
    # Pure logic: a twin already in the step's new batch, or brought by another transfer target, is not doubled.
    def target(question: str, twin: str | None = None) -> Target:
        t = Target(question, (), question, "transfer" if twin else "asked", [], [], [])
        if twin:
            t.extra["twin"] = twin
        return t

    new = [target("Which event is on December 10?"), target("When is the Regatta?")]
    twin_of = {t.question: t for t in new}
    drawn = [target("Which event is on April 14?", new[0].question), target("Which one is on May 2?", new[0].question),
             target("When is the Gala?", new[1].question), target("Where is the stored tunnel?")]  # fmt: skip
    assert twins(drawn, twin_of, []) == new
    assert twins(drawn, twin_of, [new[1]]) == [new[0]]
