"""The verified fact store: every statement an adapter's lineage consolidated, carried from version to version.

Each published adapter records, in its lineage, the facts it holds: the statement (the user's own words,
second person), its spans, the session it came from, and the questions it was trained on. The next sleep
replays these facts as targets (their stored answers, not the previous model's outputs, which drift), first
asking the current model a stored question about each closed-book: a fact it no longer recalls is drawn more
often. A new statement that corrects a stored one (shares a span, says "correction", "not", "moved to", ...)
retires it. Erasing a session is removing its facts (and retraining without them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from consolidation.statements import Statement


@dataclass(frozen=True)
class StoredFact:
    session_id: str
    text: str
    spans: tuple[str, ...]
    source: str
    questions: tuple[str, ...] = ()
    # Held-out questions (question, the span it asks for): never trained on, in this sleep or a later one, so
    # that the gate's retention check asks what the suite's paraphrased probes ask, not a memorised question.
    probes: tuple[tuple[str, str | None], ...] = ()
    # Which of its retention probes (`sleep.retention_probes`) the version that stored it answered right closed-book
    # (None: not recorded, a lineage from before). Later gates count a loss against this, not only against the
    # previous version: a loss allowed per sleep otherwise adds up along the lineage (docs/BENCHMARKS.md).
    recalled: tuple[str, ...] | None = None
    # Which of its questions (trained on or held out) the teacher answered right with the fact in context, when it
    # was stored (None: not checked, a lineage from before). The retention check asks only these: the 135M writer's
    # questions are often about something else ("Which Zitryx Wall?", expecting "312"), and a reply reciting the
    # statement counted as the fact kept or, when it changed, as the fact lost (`sleep.answerable`).
    answerable: tuple[str, ...] | None = None

    def asks(self, question: str) -> bool:
        """Whether a retention check may ask this question of it: one the teacher answered in context (any, if
        not checked)."""
        return self.answerable is None or question in self.answerable

    def statement(self) -> Statement:
        return Statement(self.session_id, self.text, self.spans, self.source)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredFact:
        recalled, answerable = data.get("recalled"), data.get("answerable")
        return cls(data["session_id"], data["text"], tuple(data["spans"]), data.get("source", data["text"]),
                   tuple(data.get("questions", ())), tuple((q, s) for q, s in data.get("probes", ())),
                   None if recalled is None else tuple(recalled),
                   None if answerable is None else tuple(answerable))  # fmt: skip


def load(lineage: dict[str, Any]) -> list[StoredFact]:
    return [StoredFact.from_json(f) for f in lineage.get("facts", [])]


def retire(stored: list[StoredFact], new: list[Statement]) -> tuple[list[StoredFact], list[StoredFact]]:
    """(kept, retired): stored facts that a new correcting statement shares a span with are retired."""
    corrections = [st.keys for st in new if st.corrects]
    kept: list[StoredFact] = []
    retired: list[StoredFact] = []
    for fact in stored:
        keys = {s.lower() for s in fact.spans}
        (retired if any(keys & c for c in corrections) else kept).append(fact)
    return kept, retired


def merge(
    kept: list[StoredFact], new: list[Statement], questions: dict[str, list[str]], cap: int,
    probes: dict[str, list[tuple[str, str | None]]] | None = None,
    answerable: dict[str, tuple[str, ...]] | None = None,
) -> list[StoredFact]:  # fmt: skip
    """The store after this sleep: the kept facts plus the new statements (with the questions trained on them, the
    held-out `probes` asked about them, and which of those the teacher answers in context: `answerable`, None
    for a statement not checked), the newest `cap` facts if there are more (each sleep replays the store, so its
    size bounds the cost)."""
    held, vetted = probes or {}, answerable or {}
    added = [StoredFact(st.session_id, st.text, st.spans, st.source, tuple(questions.get(st.text, ())),
                        tuple(held.get(st.text, ())), None, vetted.get(st.text)) for st in new]  # fmt: skip
    seen: set[str] = set()
    out: list[StoredFact] = []
    for fact in reversed([*kept, *added]):  # a statement told again keeps its newest copy
        if fact.text.lower() not in seen:
            seen.add(fact.text.lower())
            out.append(fact)
    return list(reversed(out))[-cap:]
