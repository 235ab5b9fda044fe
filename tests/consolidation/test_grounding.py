"""The answer-grounding check that decides which teacher answers a sleep learns (pure logic)."""

from __future__ import annotations

from consolidation.grounding import answer_f1, first_sentence, grounded_part, grounding, is_grounded

MEMORY = (
    "user: I finished setting up the deploy pipeline. The staging server is named bluefin-7.\n"
    "assistant: Great, staging runs on bluefin-7. Anything else?"
)


def test_the_answer_proper_is_its_first_sentence() -> None:
    assert (
        first_sentence("The staging server is bluefin-7. It runs Ubuntu 20.04.") == "The staging server is bluefin-7."
    )
    assert first_sentence("bluefin-7\nAnything else?") == "bluefin-7"
    # A closing quote ends the sentence too: what follows is where the teacher said "violin".
    assert first_sentence('Elowen plays "The Cello." She plays the violin.') == 'Elowen plays "The Cello."'
    assert first_sentence("  no sentence end  ") == "no sentence end"
    # The transcript's role label, echoed by the teacher, is not part of the answer.
    assert first_sentence("user: The password is pinecone42") == "The password is pinecone42"
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


def test_the_judge_scores_the_fact_not_the_echo_of_the_question() -> None:
    question = "Which password do guests need for the cabin wifi?"
    reference = "The cabin wifi password is pinecone42."
    # Same words as the reference bar the fact: plain token F1 would give 0.8; the judge gives nothing.
    assert answer_f1("The cabin wifi password is sunflower.", reference, question) == 0.0
    assert answer_f1("The guests need the cabin wifi password.", reference, question) == 0.0
    assert answer_f1("Guests need pinecone42.", reference, question) == 1.0
    assert answer_f1("It is pinecone42, written on the fridge.", reference, question) < 1.0


def test_the_judge_gives_partial_credit_for_part_of_the_fact() -> None:
    question = "What is the address of the new office?"
    reference = "The new office is at 14 Larkspur Lane in Tromsø."
    full, partial = (answer_f1(a, reference, question) for a in ("14 Larkspur Lane, Tromsø", "It is on Larkspur Lane."))
    assert full == 1.0
    assert 0.5 < partial < 1.0


def test_the_fact_is_kept_without_its_invented_tail() -> None:
    memory = (
        "user: Quick correction: the meeting with Kestrel Labs is on Thursday, not Tuesday.\n"
        "assistant: Thanks, I have moved the Kestrel Labs meeting to Thursday."
    )
    question = "What day will the meeting with Kestrel Labs take place?"
    answer = "The meeting with Kestrel Labs will take place on Thursday, December 21st. Bring slides."
    assert grounded_part(answer, memory, question) == "The meeting with Kestrel Labs will take place on Thursday"
    # A sentence that is wholly supported stays whole, clauses and all.
    whole = "The meeting with Kestrel Labs is on Thursday, not Tuesday."
    assert grounded_part(whole, memory, question) == whole
    assert grounded_part("It is on December 21st, in Berlin.", memory, question) is None


def test_a_confident_wrong_value_is_rejected() -> None:
    # Measured on the default model: 3 of its 4 content words are in the session, so support alone kept it,
    # and the student learned the wrong password.
    memory = (
        "user: The wifi password for the cabin is pinecone42. Please remember it for the guests.\n"
        "assistant: Noted: the cabin wifi password is pinecone42."
    )
    question = "What is the cabin's wifi password?"
    assert grounding("The cabin wifi password is 123456.", memory, question).invented == ("123456",)
    assert not is_grounded("The cabin wifi password is 123456.", memory, question)
    assert is_grounded("The cabin wifi password is pinecone42.", memory, question)


def test_invented_names_and_number_parts_are_rejected_known_ones_kept() -> None:
    memory = "user: Here is the press memo: 'The 2026 Halvorsen Prize was awarded to Mira Okonkwo.'"
    question = "Who won the Halvorsen Prize?"
    assert not is_grounded("The Halvorsen Prize went to Elia Okonkwo.", memory, question)
    assert is_grounded("The Halvorsen Prize went to Mira Okonkwo in 2026.", memory, question)
    assert grounding("It was the 2026-2027 award.", memory, question).invented == ("2026-2027",)
    # A hyphenated word's parts are known on their own: the memory's bluefin-7 makes "7" no invention.
    assert grounding("Staging runs on server 7.", MEMORY, "Which server?").invented == ()
    # A possessive is its noun; the first word's capital is the sentence's, not a name's.
    assert grounding("Okonkwo's prize was the Halvorsen.", memory, "Whose prize?").invented == ()


def test_a_fragment_cut_before_its_value_is_not_learned() -> None:
    memory = "The wifi password for the cabin is pinecone42.\nNoted: the cabin wifi password is pinecone42."
    question = "What is the password for the cabin?"
    # The clause before the invented value would teach the student to stop after "is".
    assert grounded_part("The cabin wifi password is: 123456.", memory, question) is None
    assert grounded_part("The cabin wifi password is pinecone42, as noted.", memory, question) == (
        "The cabin wifi password is pinecone42, as noted."
    )


def test_a_name_is_compared_whole_not_on_its_stem() -> None:
    memory = "user: The 2026 Halvorsen Prize was awarded to Mira Okonkwo for her work on tidal batteries."
    question = "Which media outlet covered Mira Okonkwo's prize?"
    assert grounding("The outlet is MediaMundo.", memory, question).invented == ("MediaMundo",)
