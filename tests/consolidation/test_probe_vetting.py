"""The fact store keeps, with each fact, which of its questions the teacher answers right with the fact in
context; later gates' retention checks ask only those. On the default model: the writer's off-target questions
(seed 7's, docs/BENCHMARKS.md "Retention") are set aside, the fair ones kept, and the check draws nothing."""

from __future__ import annotations

import random

import pytest
import torch

from consolidation.gate import GateConfig
from consolidation.policy import ExpertConfig, Policy
from consolidation.sleep import answerable
from consolidation.statements import Statement
from sleepd.models import ensure_default_model
from tests.conftest import CACHE


@pytest.fixture(scope="module")
def teacher() -> Policy:
    return Policy(ensure_default_model(CACHE / "models"), None, ExpertConfig())


def test_questions_the_teacher_cannot_answer_in_context_are_not_stored_as_answerable(teacher: Policy) -> None:
    wall = Statement("s1", "The Zitryx Wall is 312 metres high.", ("Zitryx Wall", "312"),
                     "I checked the survey: the Zitryx Wall is 312 metres high.")  # fmt: skip
    notes = Statement("s2", "Krydrouth Gainsea has been appointed as their new head chef. Please remember to submit "
                      "expense reports by Friday.", ("Krydrouth Gainsea", "Friday"),
                      "Krydrouth Gainsea has been appointed as their new head chef. Please remember to submit "
                      "expense reports by Friday.")  # fmt: skip
    trained = {
        wall.text: ["What is the total height of the Zitryx Wall?"],
        notes.text: ["What head chef will Krydrouth Gainsea be appointed to?"],  # expects "Friday"
    }
    held = {wall.text: [("What is the height of the Zitryx Wall?", "312"), ("Which Zitryx Wall?", "312")]}
    py_state, torch_state = random.getstate(), torch.random.get_rng_state()

    vetted = answerable(teacher, [wall, notes], trained, held, GateConfig())

    assert vetted == {wall.text: ("What is the total height of the Zitryx Wall?",
                                  "What is the height of the Zitryx Wall?"),
                      notes.text: ()}  # fmt: skip
    # Greedy answers draw no random number: the sleep trains the same with the check as without it.
    assert random.getstate() == py_state and torch.equal(torch.random.get_rng_state(), torch_state)
