"""The gate's per-probe rows (what the sleep report shows): scored like the gate's recall, naming their sessions."""

from __future__ import annotations

from consolidation.gate import examples, recall
from consolidation.statements import Statement
from consolidation.targets import Target


def probe(question: str, session: str, text: str, spans: tuple[str, ...]) -> Target:
    return Target(text, (Statement(session, text, spans, text),), question, "asked", [], [], [])


def test_rows_score_each_answer_like_the_gate_and_name_the_sessions_for_erasure() -> None:
    probes = [
        probe("Where is the vault?", "s1#0", "The vault is in Oslo.", ("Oslo",)),
        probe("What is the vault code?", "s2#3", "The vault code is 4471.", ("4471",)),
    ]
    before, after = ["I do not know.", "It is 4471."], ["In Oslo.", "It is 4417."]
    rows = examples(probes, before, after, match=0.5)
    assert [(r["before_ok"], r["after_ok"]) for r in rows] == [(False, True), (True, False)]
    assert [r["sessions"] for r in rows] == [["s1"], ["s2"]]  # the session id, not the record's turn suffix
    assert [r["expected"] for r in rows] == [["Oslo"], ["4471"]]
    assert sum(r["after_ok"] for r in rows) / len(rows) == recall(after, probes, 0.5)
