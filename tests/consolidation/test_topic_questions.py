"""Questions keyed on a session's salient phrases, so the teacher states the memory from each of them (pure logic)."""

from __future__ import annotations

from consolidation.questions import topic_questions
from consolidation.sessions import Memory


def memory(*turns: str) -> Memory:
    return Memory("s", [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)])


def test_names_and_what_both_sides_said_become_topics() -> None:
    m = memory(
        "My daughter Elowen just started lessons. She plays the cello.",
        "How lovely! Cello is a beautiful instrument for Elowen.",
    )
    # "lessons" and "daughter" were said once, by the user only: not salient; "My" starts a sentence.
    assert topic_questions(m) == ["What do you know about Elowen?", "What do you know about the cello?"]


def test_a_run_of_salient_words_is_one_phrase_and_numbers_count() -> None:
    m = memory(
        "The wifi password for the cabin is pinecone42. Please remember it for the guests.",
        "Noted: the cabin wifi password is pinecone42.",
    )
    assert topic_questions(m) == [
        "What do you know about the wifi password?",
        "What do you know about the cabin?",
        "What do you know about pinecone42?",
    ]
    assert topic_questions(m, limit=1) == ["What do you know about the wifi password?"]


def test_an_introduced_thing_is_referred_to_definitely_and_repeats_are_asked_once() -> None:
    m = memory(
        "Our team picked a mascot today: a purple otter named Captain Fizz. Captain Fizz is great.",
        "Captain Fizz the purple otter, what a fun mascot!",
    )
    assert topic_questions(m) == [
        "What do you know about the mascot?",
        "What do you know about the purple otter?",
        "What do you know about Captain Fizz?",
    ]


def test_a_session_without_salient_words_asks_nothing() -> None:
    assert topic_questions(memory("hi", "Hello! How can I help?")) == []
