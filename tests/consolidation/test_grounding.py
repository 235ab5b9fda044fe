"""The answer-grounding check that decides which teacher answers a sleep learns (pure logic)."""

from __future__ import annotations

from consolidation.grounding import first_sentence, grounding, is_grounded

MEMORY = (
    "user: I finished setting up the deploy pipeline. The staging server is named bluefin-7.\n"
    "assistant: Great, staging runs on bluefin-7. Anything else?"
)


def test_the_answer_proper_is_its_first_sentence() -> None:
    assert (
        first_sentence("The staging server is bluefin-7. It runs Ubuntu 20.04.") == "The staging server is bluefin-7."
    )
    assert first_sentence("bluefin-7\nAnything else?") == "bluefin-7"
    assert first_sentence("  no sentence end  ") == "no sentence end"
    assert first_sentence("") == ""


def test_an_answer_stating_the_memory_is_kept() -> None:
    assert is_grounded("The staging server is bluefin-7.", MEMORY, "Which server is used for staging?")
    assert is_grounded("It is called Bluefin-7.", MEMORY, "What is the staging server called?")


def test_invented_detail_is_rejected() -> None:
    # The fact, wrapped in made-up detail: most of what it asserts is in no session.
    answer = "The user's server is a Linux server running Bluefin-7 on Ubuntu 20.04 in Frankfurt."
    assert not is_grounded(answer, MEMORY, "What does the user's server have?")
    assert grounding(answer, MEMORY, "What does the user's server have?").support < 0.75


def test_an_answer_that_only_echoes_the_question_is_rejected() -> None:
    # Everything it says was in the question: nothing only the memory could supply.
    question = "Is the staging server named bluefin-7?"
    assert grounding("The staging server is named bluefin-7.", MEMORY, question).novel == 0
    assert not is_grounded("The staging server is named bluefin-7.", MEMORY, question)


def test_an_answer_without_content_is_rejected() -> None:
    assert not is_grounded("Yes, it is.", MEMORY, "Which server is used for staging?")
    assert grounding("", MEMORY, "Which server?").support == 0.0


def test_word_forms_match_on_their_stem() -> None:
    memory = "user: Mira Okonkwo won the prize for her work on tidal batteries."
    assert is_grounded("She works on a tidal battery.", memory, "What does Mira Okonkwo work on?")
