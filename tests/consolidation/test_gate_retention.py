"""The gate's retention check on the tiny model: a candidate that lost more earlier facts than allowed (the
previous version, or the version that stored them, recalled them) is refused, and one that kept them is not
refused for that."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from consolidation.factstore import StoredFact
from consolidation.gate import GateConfig, allowed_losses, closed_book_answers, evaluate, kept_counts
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import SeedingConfig, seed_knowledge, verifier_score
from consolidation.sleep import SleepConfig, retention_probes, stored_probes, stored_targets
from consolidation.statements import Statement
from consolidation.targets import Target, attach_teacher, make_target


def probe(question: str, text: str, span: str) -> Target:
    return Target(text, (Statement("s1", text, (span,), text),), question, "asked", [], [], [])


def test_kept_counts_only_facts_the_previous_version_knew() -> None:
    probes = [probe("Vault code?", "The vault code is 4471.", "4471"),
              probe("Where is the vault?", "The vault is in Oslo.", "Oslo"),
              probe("Who guards it?", "Mira guards the vault.", "Mira")]  # fmt: skip
    before = ["It is 4471.", "In Oslo.", "I do not know."]
    after = ["It is 4417.", "Oslo.", "Mira does."]  # the third was never known: gaining it is not retention
    assert kept_counts(before, after, probes, match=0.5) == (2, 1)


def test_kept_counts_also_the_facts_the_storing_version_recalled() -> None:
    # The lineage's budget: a probe the previous version already lost still counts as known when the version
    # that stored its fact answered it, so losses allowed one sleep at a time cannot add up unseen.
    probes = [probe("Vault code?", "The vault code is 4471.", "4471"),
              probe("Where is the vault?", "The vault is in Oslo.", "Oslo")]  # fmt: skip
    before = ["It is 4417.", "In Oslo."]  # the previous version lost the code
    after = ["It is 4417.", "Oslo."]
    assert kept_counts(before, after, probes, match=0.5) == (1, 1)
    assert kept_counts(before, after, probes, 0.5, [True, False]) == (2, 1)
    assert kept_counts(["It is 4471.", "In Oslo."], after, probes, 0.5, [True, True]) == (2, 1)  # no double count


def test_one_lost_fact_is_allowed_then_the_goal_share() -> None:
    assert [allowed_losses(k, 0.9) for k in (0, 1, 3, 11, 19, 20, 64)] == [0, 1, 1, 1, 1, 2, 6]


def _train(tiny_model: Path, facts: list[tuple[Statement, str]], out: Path) -> Path:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    targets = [make_target(policy, fact.text, (fact,), question, "asked") for fact, question in facts]
    attach_teacher(policy, targets)
    cfg = SeedingConfig(steps=60 * len(facts), batch=1, lr=3e-3, onpolicy_every=0, w_replay=0.0, hard=1.0)
    seed_knowledge(policy, targets, [], [], cfg)
    policy.save_expert(out)
    return out


def fact(text: str, span: str) -> Statement:
    return Statement("s1", text, (span,), text)


def test_gate_refuses_a_candidate_that_forgot_what_the_previous_version_recalled(
    tiny_model: Path, tmp_path: Path
) -> None:
    old = [(fact("The vault code is 4471.", "4471"), "What is the vault code?"),
           (fact("The ferry leaves at dawn.", "dawn"), "When does the ferry leave?")]  # fmt: skip
    new = [(fact("The lighthouse keeper is Mira.", "Mira"), "Who keeps the lighthouse?")]
    previous = _train(tiny_model, old, tmp_path / "previous")
    forgot = _train(tiny_model, new, tmp_path / "forgot")
    served = Policy.serving(tiny_model, {"previous": previous, "candidate": forgot})
    stored = [make_target(served, st.text, (st,), q, "asked") for st, q in old]
    with served.using("previous"):
        answers = closed_book_answers(served, stored, student=True, max_new_tokens=12)
    # The setting this test needs: both facts were learned.
    assert all(verifier_score(a, t) >= 0.5 for a, t in zip(answers, stored, strict=True)), answers

    cfg = GateConfig(max_new_tokens=12, max_anchor_kl=100.0, max_base_kl=100.0, min_recall_gain=-1.0)
    anchors = ["What is 2 + 2?"]
    refused = evaluate(served, [], anchors, cfg, previous="previous", before_answers=[], stored=stored)
    assert (refused.stored_known, refused.stored_kept) == (2, 0)  # two lost: over the one loss allowed
    assert not refused.passed and any("forgot earlier facts" in r for r in refused.reasons), refused.reasons
    # What the report page lists: each fact the previous version answered, the candidate's answer beside it.
    assert [(r["question"], r["after_ok"]) for r in refused.earlier] == [(q, False) for _, q in old]
    assert refused.earlier[0]["sessions"] == ["s1"] and "earlier" not in refused.metrics()

    # The same adapter as candidate keeps both: nothing refused for retention.
    served = Policy.serving(tiny_model, {"previous": previous, "candidate": previous})
    kept = evaluate(served, [], anchors, cfg, previous="previous", before_answers=[], stored=stored)
    assert (kept.stored_known, kept.stored_kept) == (2, 2)
    assert kept.passed, kept.reasons

    # A previous version that had already lost both (each loss allowed in its own sleep) is no excuse: the
    # version that stored them recalled them, and the lineage may lose one.
    served = Policy.serving(tiny_model, {"previous": forgot, "candidate": forgot})
    drifted = evaluate(served, [], anchors, cfg, previous="previous", before_answers=[], stored=stored,
                       recalled=[True, True])  # fmt: skip
    assert (drifted.stored_known, drifted.stored_kept) == (2, 0) and not drifted.passed
    assert [r["at_store"] for r in drifted.earlier] == [True, True]
    unrecorded = evaluate(served, [], anchors, cfg, previous="previous", before_answers=[], stored=stored)
    assert unrecorded.stored_known == 0 and unrecorded.passed  # a lineage from before: the previous version only


def test_retention_asks_the_held_out_probes_which_replay_never_trains_on(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    stored = StoredFact("s1", "Mira keeps the lighthouse on Vell.", ("Mira", "Vell"), "src",
                        ("Who keeps the lighthouse?",), (("Where is Mira's lighthouse?", "Vell"),))  # fmt: skip
    trained = stored_probes(policy, [stored])[0]
    asked = retention_probes(policy, stored, trained)
    assert [t.question for t in asked] == ["Where is Mira's lighthouse?", "Who keeps the lighthouse?"]
    assert asked[0].expected == ("Vell",)  # judged by the span it was written for
    replayed = stored_targets(policy, [stored], [trained], SleepConfig(), random.Random(0))
    assert replayed and "Where is Mira's lighthouse?" not in {t.question for t in replayed}


def test_retention_skips_probes_a_lone_digit_would_score(tiny_model: Path) -> None:
    # A task trace's step number ("Step 2 (copy) passed") is stated by any answer that lists the steps, right
    # run number or not: such a probe cannot tell a kept fact from a lost one.
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    text = "You ran the nightly build. Step 1 (copy) passed. Step 2 (copy) passed. It finished as run number 4070."
    stored = StoredFact("s1", text, ("1", "2", "4070"), text, ("What run number did the build finish as?",),
                        (("Which run number is 4070?", "2"), ("What number did the nightly build end as?", "4070"),
                         ("What happened in the nightly build?", None)))  # fmt: skip
    trained = stored_probes(policy, [stored])[0]
    asked = retention_probes(policy, stored, trained)
    assert [t.question for t in asked] == ["What number did the nightly build end as?",
                                           "What happened in the nightly build?",
                                           "What run number did the build finish as?"]  # fmt: skip


def test_a_fact_with_no_span_and_no_trained_question_is_skipped_not_fatal(tiny_model: Path) -> None:
    # A passage sentence with no names or numbers, about which the teacher wrote no usable question: a SQuAD
    # sleep's gate passed, then storing it raised IndexError and the cycle published nothing.
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    bare = StoredFact("s1", "It was a long and cold winter.", (), "src", (), (("What was the winter like?", None),))
    keyed = StoredFact("s2", "The vault code is 4471.", ("4471",), "src")
    trained = stored_probes(policy, [bare, keyed])
    assert trained[0] is None and trained[1] is not None
    assert trained[1].question == "What do you know about 4471?"
    # The gate still asks its held-out probe; there is no trained question to add.
    assert [t.question for t in retention_probes(policy, bare, trained[0])] == ["What was the winter like?"]
    replayed = stored_targets(policy, [bare, keyed], trained, SleepConfig(), random.Random(0))
    assert replayed and {t.statements[0].text for t in replayed} == {keyed.text}
    assert stored_targets(policy, [bare], [None], SleepConfig(), random.Random(0)) == []


def test_retention_asks_only_the_questions_the_teacher_answered_in_context(tiny_model: Path) -> None:
    # The writer's "Which Zitryx Wall?" (expecting "312") is answered by any reply reciting the statement and by
    # no reply that does not: it cannot tell a kept fact from a lost one, and the store marks it so.
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    text = "The Zitryx Wall is 312 metres high."
    stored = StoredFact("s1", text, ("Zitryx Wall", "312"), text,
                        ("Which is the largest Zitryx Wall?", "How tall is the Zitryx Wall?"),
                        (("Which Zitryx Wall?", "312"), ("Which wall is 312 metres high?", "Zitryx Wall")),
                        answerable=("How tall is the Zitryx Wall?", "Which wall is 312 metres high?"))  # fmt: skip
    trained = stored_probes(policy, [stored])[0]
    assert trained is not None and trained.question == "How tall is the Zitryx Wall?"  # the first it answered
    asked = retention_probes(policy, stored, trained)
    assert [t.question for t in asked] == ["Which wall is 312 metres high?", "How tall is the Zitryx Wall?"]
    # None of its trained questions answered in context: asked by its first span, as a fact with none.
    unanswered = replace(stored, answerable=("Which wall is 312 metres high?",))
    assert stored_probes(policy, [unanswered])[0].question == "What do you know about Zitryx Wall?"  # type: ignore[union-attr]
