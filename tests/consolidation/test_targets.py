"""Training targets: questions both ways about each statement, answered by the statement itself."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from consolidation.policy import ExpertConfig, Policy
from consolidation.statements import Statement
from consolidation.targets import about, attach_teacher, cloze_targets, keyed_targets, make_target, transfer_targets

CODE = Statement("s1", "The access code for Neakound Boathouse is jundmyr-66.", ("Neakound Boathouse", "jundmyr-66"),
                 "src")  # fmt: skip
TUNNEL = Statement("s2", "The Broudeack Tunnel is 964 metres long.", ("Broudeack Tunnel", "964"), "src")


def test_a_question_must_be_about_the_statement_and_leave_something_to_answer() -> None:
    assert about("Which code opens Neakound Boathouse?", CODE, exact=True)
    assert not about("Which tunnel is Broudeck?", TUNNEL, exact=True)  # a misspelt name is not the name
    assert about("How long is the tunnel, in metres?", TUNNEL) and not about("How long?", TUNNEL)
    assert not about("Is jundmyr-66 the code for Neakound Boathouse?", CODE)  # nothing left to answer


def test_keyed_and_cloze_targets_ask_both_ways_and_answer_with_the_statement(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=2))
    keyed = keyed_targets(policy, [CODE, TUNNEL], 2, random.Random(0))
    assert len(keyed) == 8 and {t.key for t in keyed} == {"neakound boathouse", "jundmyr-66", "broudeack tunnel", "964"}
    by_key = {t.key: t for t in keyed}
    assert by_key["jundmyr-66"].expected == ("Neakound Boathouse",)  # the code gives the place
    assert by_key["neakound boathouse"].expected == ("jundmyr-66",)  # and the place gives the code
    cloze = cloze_targets(policy, [TUNNEL], 1, random.Random(0))
    assert [t.question.split(": ", 1)[-1].split("? ", 1)[-1] for t in cloze] == [
        "The ___ is 964 metres long.", "The Broudeack Tunnel is ___ metres long."
    ]  # fmt: skip
    eos = policy.tokenizer.eos_token_id
    assert all(t.answer[-1] == eos and policy.decode(t.answer) == TUNNEL.text for t in cloze)
    attach_teacher(policy, cloze, top_k=4)
    assert all(t.topk_ids.shape == (len(t.answer), 4) and t.evidence.shape == (len(t.answer),) for t in cloze)  # type: ignore[union-attr]


def test_an_answer_aware_question_expects_the_span_it_asks_for() -> None:
    from consolidation.targets import Target

    build = Statement("s3", "You ran the index rebuild on zunddex-98 as run number 3133, steps 1 and 2.",
                      ("zunddex-98", "3133", "1", "2"), "src")  # fmt: skip
    asked = Target("k", (build,), "Which build finished as run number 3133?", "asked", [], [], [], span="zunddex-98")
    assert asked.expected == ("zunddex-98",)  # not the statement's other numbers: the question asks for the build
    whole = Target("k", (build,), "Which build finished as run number 3133?", "asked", [], [], [])
    assert whole.expected == ("zunddex-98", "1", "2")  # a question about the whole statement: all it leaves open


def test_only_the_gates_probes_expect_their_asked_span(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Judging training by the asked span raised the report seed's drift over the gate (docs/BENCHMARKS.md), so a
    sleep's training targets keep the statement's spans; only the held-out probes expect the asked one. The
    question writer is replaced (a tiny random model writes no usable questions); the split is what is tested."""
    import consolidation.sleep as sleep
    from consolidation.targets import Asked

    build = Statement("s3", "You ran the index rebuild on zunddex-98 in Tromso as run number 3133.",
                      ("zunddex-98", "Tromso", "3133"), "src")  # fmt: skip
    written = [
        Asked("Which build finished as run number 3133?", "zunddex-98"),
        Asked("Which run was zunddex-98?", "3133"),
    ]
    monkeypatch.setattr(sleep, "asked_questions", lambda policy, found, *a, **k: [written for _ in found])
    policy = Policy(tiny_model, None, ExpertConfig(rank=2))
    prep = sleep.prepare(policy, [build], [], sleep.SleepConfig(keyed_per_span=1), lambda done, step: None)
    assert [(p.question, p.span) for p in prep.probes] == [(written[0].question, "zunddex-98")]
    asked = [t for t in prep.targets if t.kind == "asked"]
    assert [(t.question, t.span) for t in asked] == [(written[1].question, None)]
    assert asked[0].expected == ("Tromso", "3133")  # the statement's spans the question leaves open


def test_the_store_keeps_every_spare_question_as_a_later_retention_probe(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Questions the teacher wrote beyond the trained ones are never trained on: the fact store keeps all of them
    as later sleeps' retention probes, even when this sleep's gate had enough probes without them (one held-out
    probe per fact let seed 4's check keep 6 of 6 while the suite lost 3 of 8). This sleep is unchanged."""
    import consolidation.sleep as sleep
    from consolidation.targets import Asked

    build = Statement("s3", "You ran the index rebuild on zunddex-98 in Tromso as run number 3133.",
                      ("zunddex-98", "Tromso", "3133"), "src")  # fmt: skip
    written = [
        Asked("Which build finished as run number 3133?", "zunddex-98"),
        Asked("Which run was zunddex-98?", "3133"),
        Asked("Where did the zunddex-98 rebuild run?", "Tromso"),
        Asked("What was run 3133 rebuilding?", "zunddex-98"),
    ]
    monkeypatch.setattr(sleep, "asked_questions", lambda policy, found, *a, **k: [written for _ in found])
    policy = Policy(tiny_model, None, ExpertConfig(rank=2))
    cfg = sleep.SleepConfig(keyed_per_span=1, asked_per_statement=2, min_probes=1)
    prep = sleep.prepare(policy, [build], [], cfg, lambda done, step: None)
    assert [p.question for p in prep.probes] == [written[0].question]  # this gate: the one held out
    assert [t.question for t in prep.targets if t.kind == "asked"] == [written[1].question]
    assert prep.questions[build.text] == [written[1].question]
    assert prep.heldout[build.text] == [(a.question, a.span) for a in (written[0], *written[2:])]


def test_a_new_facts_wording_is_asked_of_the_confusable_stored_facts(tiny_model: Path) -> None:
    # The new event's questions, asked of the stored event (same kind: both "take place"), swap a date for a
    # date and a name for a name; the tunnel shares no words with the event and is left alone.
    policy = Policy(tiny_model, None, ExpertConfig(rank=2))
    new = Statement("s3", "The Gyckbral Regatta takes place on December 10.", ("Gyckbral Regatta", "December 10"),
                    "src")  # fmt: skip
    gala = Statement("s1", "The Kroxhea Gala takes place on April 14 this year.", ("Kroxhea Gala", "April 14"), "src")
    asked = [make_target(policy, new.text, (new,), q, "asked")
             for q in ("Which event takes place on December 10?", "When does the Gyckbral Regatta take place?",
                       "What happens this winter?")]  # fmt: skip
    moved = transfer_targets(policy, asked, [TUNNEL, gala], 2)
    assert [t.question for t in moved] == ["Which event takes place on April 14?",
                                           "When does the Kroxhea Gala take place?"]  # fmt: skip
    assert all(t.statements == (gala,) and t.kind == "transfer" for t in moved)
    assert [t.extra["twin"] for t in moved] == [asked[0].question, asked[1].question]  # paired in a step on request
    assert transfer_targets(policy, asked, [TUNNEL], 2) == []
