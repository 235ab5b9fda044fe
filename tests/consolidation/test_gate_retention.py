"""The gate's retention check on the tiny model: a candidate that lost an earlier fact the previous version
recalled is refused, and one that kept it is not refused for that."""

from __future__ import annotations

from pathlib import Path

from consolidation.gate import GateConfig, closed_book_answers, evaluate, kept_counts
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import SeedingConfig, seed_knowledge, verifier_score
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


def _train(tiny_model: Path, fact: Statement, question: str, out: Path) -> Path:
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    target = make_target(policy, fact.text, (fact,), question, "asked")
    attach_teacher(policy, [target])
    cfg = SeedingConfig(steps=40, batch=1, lr=3e-3, onpolicy_every=0, w_replay=0.0, hard=1.0)
    seed_knowledge(policy, [target], [], [], cfg)
    policy.save_expert(out)
    return out


def test_gate_refuses_a_candidate_that_forgot_what_the_previous_version_recalled(
    tiny_model: Path, tmp_path: Path
) -> None:
    old = Statement("s1", "The vault code is 4471.", ("4471",), "The vault code is 4471.")
    new = Statement("s2", "The ferry leaves at dawn.", ("dawn",), "The ferry leaves at dawn.")
    previous = _train(tiny_model, old, "What is the vault code?", tmp_path / "previous")
    forgot = _train(tiny_model, new, "When does the ferry leave?", tmp_path / "forgot")
    served = Policy.serving(tiny_model, {"previous": previous, "candidate": forgot})
    stored = [make_target(served, old.text, (old,), "What is the vault code?", "asked")]
    with served.using("previous"):
        answer = closed_book_answers(served, stored, student=True, max_new_tokens=12)[0]
    assert verifier_score(answer, stored[0]) >= 0.5, answer  # the setting this test needs: the fact was learned

    cfg = GateConfig(max_new_tokens=12, max_anchor_kl=100.0, max_base_kl=100.0, min_recall_gain=-1.0)
    anchors = ["What is 2 + 2?"]
    refused = evaluate(served, [], anchors, cfg, previous="previous", before_answers=[], stored=stored)
    assert (refused.stored_known, refused.stored_kept) == (1, 0)
    assert not refused.passed and any("forgot earlier facts" in r for r in refused.reasons), refused.reasons

    # The same adapter as candidate keeps the fact: nothing refused for retention.
    served = Policy.serving(tiny_model, {"previous": previous, "candidate": previous})
    kept = evaluate(served, [], anchors, cfg, previous="previous", before_answers=[], stored=stored)
    assert (kept.stored_known, kept.stored_kept) == (1, 1)
    assert kept.passed, kept.reasons
