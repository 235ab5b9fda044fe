"""The fact store along an adapter's lineage: corrections retire stored facts, the newest copy wins, a cap."""

from __future__ import annotations

from dataclasses import replace

from consolidation.factstore import StoredFact, load, merge, retire
from consolidation.statements import Statement


def test_a_correction_retires_the_stored_fact_it_shares_a_name_with() -> None:
    stored = [
        StoredFact("s1", "The Vargend Hackathon will be held in Room Shaxbouth.",
                   ("Vargend Hackathon", "Room Shaxbouth"), "src", ("Where is the Vargend Hackathon?",)),
        StoredFact("s2", "The wifi password is pinecone42.", ("pinecone42",), "src"),
    ]  # fmt: skip
    fix = Statement("s3", "Correction: the Vargend Hackathon moved to Room Veldo.", ("Vargend Hackathon", "Room Veldo"),
                    "src", corrects=True)  # fmt: skip
    kept, retired = retire(stored, [fix])
    assert [f.session_id for f in kept] == ["s2"] and [f.session_id for f in retired] == ["s1"]
    # A correction that names the stored value only to deny it retires it too.
    moved = Statement("s5", "The fair moved to Room Veldo, not Room Shaxbouth.", ("Room Veldo",), "src",
                      corrects=True, denied=("Room Shaxbouth",))  # fmt: skip
    assert [f.session_id for f in retire(stored, [moved])[1]] == ["s1"]
    # A plain (non-correcting) statement about the same thing retires nothing.
    assert retire(stored, [Statement("s4", "The Vargend Hackathon is fun.", ("Vargend Hackathon",), "src")])[1] == []


def test_merge_keeps_the_newest_copy_and_the_cap_and_round_trips() -> None:
    old = [StoredFact("s1", "The code is 4471.", ("4471",), "src"), StoredFact("s2", "Ann is 7.", ("Ann", "7"), "src")]
    new = [Statement("s3", "The code is 4471.", ("4471",), "src2"), Statement("s3", "Bo is 9.", ("Bo", "9"), "src2")]
    facts = merge(old, new, {"Bo is 9.": ["How old is Bo?"]}, cap=10)
    assert [(f.session_id, f.text) for f in facts] == [("s2", "Ann is 7."), ("s3", "The code is 4471."),
                                                       ("s3", "Bo is 9.")]  # fmt: skip
    assert facts[-1].questions == ("How old is Bo?",)
    assert merge(old, new, {"Bo is 9.": ["How old is Bo?"]}, cap=2) == facts[-2:]
    assert load({"facts": [f.to_json() for f in facts]}) == facts


def test_merge_stores_the_held_out_probes_and_old_lineages_still_load() -> None:
    new = [Statement("s1", "Bo is 9.", ("Bo", "9"), "src")]
    facts = merge([], new, {"Bo is 9.": ["How old is Bo?"]}, cap=10, probes={"Bo is 9.": [("Bo's age?", "9")]})
    assert facts[0].probes == (("Bo's age?", "9"),)
    assert load({"facts": [f.to_json() for f in facts]}) == facts  # JSON lists come back as tuples
    legacy = {k: v for k, v in facts[0].to_json().items() if k != "probes"}  # stored before probes were kept
    assert load({"facts": [legacy]})[0].probes == ()
    assert load({"facts": [legacy]})[0].recalled is None  # not recorded: the gate asks the previous version only
    recorded = replace(facts[0], recalled=("Bo's age?",))
    assert load({"facts": [recorded.to_json()]})[0] == recorded


def test_merge_stores_which_questions_the_teacher_answered_in_context() -> None:
    new = [Statement("s1", "Bo is 9.", ("Bo", "9"), "src"), Statement("s1", "Ann is 7.", ("Ann", "7"), "src")]
    facts = merge([], new, {"Bo is 9.": ["How old is Bo?"]}, cap=10, probes={"Bo is 9.": [("Which Bo?", "9")]},
                  answerable={"Bo is 9.": ("How old is Bo?",)})  # fmt: skip
    assert facts[0].answerable == ("How old is Bo?",)
    assert facts[1].answerable is None  # not checked: every question counts, as in a lineage from before
    assert load({"facts": [f.to_json() for f in facts]}) == facts
    legacy = {k: v for k, v in facts[0].to_json().items() if k != "answerable"}
    assert load({"facts": [legacy]})[0].answerable is None
