"""Statements a sleep teaches: the user's own words, second person, self-contained, corrections applied."""

from __future__ import annotations

from consolidation.sessions import Memory
from consolidation.statements import spans_of, statements, states_span, supersede, to_second_person, units


def memory(*turns: str) -> Memory:
    return Memory("s1", [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)])


def test_first_person_becomes_second_person() -> None:
    assert to_second_person("My daughter plays. I'm proud; we told our coach and me.") == (
        "Your daughter plays. You're proud; you told your coach and you."
    )
    assert to_second_person("Thanks. I ran it myself.") == "Thanks. You ran it yourself."
    assert to_second_person("The US office") == "The US office"  # the country, not "us"


def test_spans_are_names_codes_numbers_and_dates() -> None:
    assert spans_of("The access code for Neakound Boathouse is jundmyr-66.") == ("Neakound Boathouse", "jundmyr-66")
    assert spans_of("Some news from Drex Cooperative: Ann Lee was appointed.") == ("Drex Cooperative", "Ann Lee")
    assert spans_of("The fair takes place on August 18, not Tuesday.") == ("August 18", "Tuesday")
    assert spans_of("The hotline closes at 7 pm now.") == ("7 pm",)
    assert spans_of("I invented a mineral called zorblat.") == ("zorblat",)
    assert spans_of("A purple otter named Captain Fizz.") == ("Captain Fizz",)  # not "Captain" again
    assert spans_of("Thanks, that is all for now.") == ()


def test_a_pronoun_led_sentence_keeps_its_referent() -> None:
    assert units("My daughter Elowen just started lessons. She plays the cello. Please remember.") == [
        "My daughter Elowen just started lessons. She plays the cello."
    ]


def test_a_document_keeps_what_names_something_and_its_longer_sentences() -> None:
    long = "The coffee machine on the second floor needs replacing soon."
    memo = f"Here are the notes:\n\nParking is limited. The Dythlyr Canal is 417 kilometres long. {long} " * 4
    assert units(memo) == ["The Dythlyr Canal is 417 kilometres long.", long] * 4
    # A short message is one unit of the sentences that name something.
    assert units("Parking is limited. The Dythlyr Canal is 417 kilometres long.") == [
        "The Dythlyr Canal is 417 kilometres long."
    ]


def test_statements_come_from_the_user_only_and_drop_questions() -> None:
    found = statements(memory(
        "The wifi password for the cabin is pinecone42. Can you remember it?",
        "Sure! The password is hunter2 and the cabin is in Oslo.",  # the model's reply: not a statement
    ))  # fmt: skip
    assert [(s.text, s.spans) for s in found] == [("The wifi password for the cabin is pinecone42.", ("pinecone42",))]


def test_a_correction_replaces_what_it_corrects() -> None:
    found = statements(memory(
        "The Vargend Hackathon will be held in Room Shaxbouth.",
        "Noted.",
        "Correction: the Vargend Hackathon moved to Room Veldo, not Room Shaxbouth.",
    ))  # fmt: skip
    assert [s.text for s in found] == ["The Vargend Hackathon moved to Room Veldo, not Room Shaxbouth."]
    assert found[0].corrects and found[0].source.startswith("Correction:")
    # The old room is named only to be denied: no question may expect it as the answer, yet it still matches.
    assert found[0].spans == ("Vargend Hackathon", "Room Veldo") and found[0].denied == ("Room Shaxbouth",)
    assert supersede(list(reversed(found))) == list(reversed(found))  # only a *later* correction replaces


def test_a_denied_value_is_not_an_answer_but_still_matches_what_it_corrects() -> None:
    for said, denied in [
        ("The Shiltam Fair moved from Room Brivy to Room Niorfyr.", ("Room Brivy",)),
        ("The locker code is now 4471 instead of 3390.", ("3390",)),
        ("The fair takes place on August 18, not Tuesday.", ("Tuesday",)),
        ("Ann Lee, not Bo Stam, chairs the Drex Guild, and Bo Stam keeps the minutes.", ()),  # also stated
    ]:
        (st,) = statements(memory(said))
        assert st.denied == denied and not set(st.spans) & set(denied)
    # A later correction that names the earlier value only to deny it still replaces the earlier statement.
    found = statements(memory("The locker code is 3390.", "Ok.", "Correction: it is 4471, not 3390."))
    assert [(s.text, s.spans) for s in found] == [("It is 4471, not 3390.", ("4471",))]


def test_spans_match_whole_words_only() -> None:
    assert states_span("It is quokka-3.", "quokka-3")
    assert not states_span("It is quokka-35.", "quokka-3")
    assert not states_span("at 17 pm", "7 pm")
    assert states_span("ROOM veldo!", "Room Veldo")


def test_a_framing_lead_that_names_nothing_is_dropped() -> None:
    assert [s.text for s in statements(memory("Put this in the calendar: the Measvork Fair is on August 18."))] == [
        "The Measvork Fair is on August 18."
    ]
    news = "Some news from Drex Guild: Ann Lee was appointed."
    assert [s.text for s in statements(memory(news))] == [news]  # the lead names something: kept
