"""Contrast pairs: a target's question asked about an untold value, the told value pushed down there."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch

from consolidation.contrast import contrast, contrasts, unlikelihood, untold
from consolidation.policy import ExpertConfig, Policy
from consolidation.statements import Statement
from consolidation.targets import make_target

GALA = Statement("s1", "The Kroxhea Gala takes place on April 14.", ("Kroxhea Gala", "April 14"), "src")
CODE = Statement("s2", "The access code for Neakound Boathouse is jundmyr-66.", ("Neakound Boathouse", "jundmyr-66"),
                 "src")  # fmt: skip


def test_the_cue_is_swapped_in_question_and_statement_and_the_asked_value_marked(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=2))
    told = " ".join(s.text for s in (GALA, CODE)).lower()
    forward = make_target(policy, "k", (GALA,), "When is the Kroxhea Gala this year?", "asked")
    c = contrast(policy, forward, told, random.Random(0))
    assert c is not None and "Kroxhea" not in c.question and c.question.endswith(" Gala this year?"), c.question
    swapped = policy.decode(c.answer[: c.position])
    assert "Kroxhea" not in swapped and swapped.endswith("Gala takes place on")  # the statement up to the value
    assert policy.decode([c.token]).strip() == "April"  # its first token, the one pushed down

    reverse = make_target(policy, "k", (GALA,), "Which event is on April 14?", "asked")
    c = contrast(policy, reverse, told, random.Random(0))
    assert c is not None and "April 14" not in c.question
    assert policy.decode(c.answer[: c.position + 1]).strip().startswith("The K")  # "Kroxhea" given another date

    code = make_target(policy, "k", (CODE,), "The code jundmyr-66 unlocks which place?", "asked")
    c = contrast(policy, code, told, random.Random(0))
    assert c is not None and "jundmyr-" in c.question and "jundmyr-66" not in c.question  # digits redrawn

    whole = make_target(policy, "k", (GALA,), "Tell me about it.", "asked")  # names no span: nothing to swap
    assert contrast(policy, whole, told, random.Random(0)) is None
    assert set(contrasts(policy, [forward, reverse, whole], [GALA.text], 0)) == {forward.question, reverse.question}


def test_an_untold_value_keeps_the_shape_and_holds_nothing_told(tiny_model: Path) -> None:
    policy = Policy(tiny_model, None, ExpertConfig(rank=2))
    rng = random.Random(1)
    told = "the kroxhea gala takes place on april 14. may 3 is the fair."
    for _ in range(20):
        date = untold("April 14", told, policy, rng)
        assert date and date.split()[0] in ("January", "February", "March", "April", "May", "June", "July",
                                            "August", "September", "October", "November", "December")  # fmt: skip
        assert date.lower() not in told
        number = untold("964", told, policy, rng)
        assert number and len(number) == 3 and number.isdigit() and number != "964"


def test_unlikelihood_training_lowers_the_told_value_under_the_untold_cue(tiny_model: Path) -> None:
    torch.manual_seed(0)
    policy = Policy(tiny_model, None, ExpertConfig(rank=4))
    target = make_target(policy, "k", (GALA,), "When is the Kroxhea Gala this year?", "asked")
    c = contrast(policy, target, GALA.text.lower(), random.Random(0))
    assert c is not None

    def p_value() -> float:
        with torch.no_grad():
            logits, _, _ = policy.completion_logits([c.prompt], [c.answer], student=True)
            return float(torch.softmax(logits[0, c.position], -1)[c.token])

    def train(loss_of: object, steps: int = 20) -> None:
        opt = torch.optim.AdamW(policy.trainable_parameters(), lr=2e-3)
        for _ in range(steps):
            loss = loss_of()  # type: ignore[operator]
            opt.zero_grad()
            loss.backward()
            opt.step()

    def told_value_there() -> torch.Tensor:  # what a sleep's wording-level learning does: April 14 for any gala
        logits, _, _ = policy.completion_logits([c.prompt], [c.answer], student=True)
        return -torch.log_softmax(logits[0, c.position], -1)[c.token]

    start = p_value()
    train(told_value_there)
    guessed = p_value()
    assert guessed > 5 * start, (start, guessed)  # measured 2e-5 -> 2e-4 on the tiny model
    train(lambda: unlikelihood(policy, [c]))
    assert p_value() < guessed / 10, (guessed, p_value())  # measured 2e-4 -> 2e-6


def test_seeding_adds_the_contrast_term_only_when_asked(tiny_model: Path) -> None:
    from consolidation.seeding import SeedingConfig, seed_knowledge
    from consolidation.targets import attach_teacher

    policy = Policy(tiny_model, None, ExpertConfig(rank=2))
    targets = [make_target(policy, "k", (GALA,), "When is the Kroxhea Gala this year?", "asked"),
               make_target(policy, "c", (CODE,), "Which code opens Neakound Boathouse?", "asked")]  # fmt: skip
    attach_teacher(policy, targets, top_k=4)
    cfg = SeedingConfig(steps=2, batch=2, onpolicy_every=0, w_replay=0.0)
    assert all(log.contrast == 0.0 for log in seed_knowledge(policy, targets, [], [], cfg))
    with_contrast = seed_knowledge(policy, targets, [], [], dataclasses.replace(cfg, contrast=2))
    assert all(log.contrast > 0.0 for log in with_contrast)
