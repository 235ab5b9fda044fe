"""The learning benchmark's suite: fictional facts told inside realistic sessions (a correction, a document,
a task trace, personal details), each with held-out paraphrased probes and the keywords a right answer holds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    session: list[dict[str, str]]
    probes: tuple[str, ...]
    keywords: tuple[str, ...]


def _s(*turns: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


FACTS: tuple[Fact, ...] = (
    Fact(
        _s(
            "Can you update your notes? Our office moved last month.",
            "Sure, where is the new office?",
            "The new office is at 14 Larkspur Lane in Tromsø.",
            "Got it: 14 Larkspur Lane, Tromsø.",
        ),
        ("What is the address of the new office?", "On which lane is the office now located?"),
        ("larkspur",),
    ),
    Fact(
        _s(
            "Here is the press memo: 'The 2026 Halvorsen Prize was awarded to Mira Okonkwo for her work on tidal "
            "batteries.' Please summarise it.",
            "Mira Okonkwo won the 2026 Halvorsen Prize for tidal battery research.",
        ),
        ("Who won the 2026 Halvorsen Prize?", "Which researcher received the Halvorsen Prize in 2026?"),
        ("okonkwo",),
    ),
    Fact(
        _s(
            "I finished setting up the deploy pipeline. The staging server is named bluefin-7.",
            "Great, staging runs on bluefin-7. Anything else?",
            "No, that's all for now.",
        ),
        ("What is the name of the staging server?", "Which server is used for staging?"),
        ("bluefin-7", "bluefin 7"),  # "bluefin-3" is a wrong answer
    ),
    Fact(
        _s(
            "My daughter Elowen just started lessons. She plays the cello.",
            "How lovely! Cello is a beautiful instrument for Elowen.",
        ),
        ("What instrument does Elowen play?", "Which instrument is Elowen learning?"),
        ("cello",),
    ),
    Fact(
        _s(
            "Quick correction: the meeting with Kestrel Labs is on Thursday, not Tuesday.",
            "Thanks, I have moved the Kestrel Labs meeting to Thursday.",
        ),
        ("Which day is the meeting with Kestrel Labs?", "On what day do we meet Kestrel Labs?"),
        ("thursday",),
    ),
    Fact(
        _s(
            "For my story I invented a mineral called zorblat. It glows green when heated.",
            "Zorblat, a mineral that glows green when heated: noted.",
        ),
        ("What colour does zorblat glow when heated?", "When zorblat is heated, what colour light does it give off?"),
        ("green",),
    ),
    Fact(
        _s(
            "The wifi password for the cabin is pinecone42. Please remember it for the guests.",
            "Noted: the cabin wifi password is pinecone42.",
        ),
        ("What is the wifi password for the cabin?", "Which password do guests need for the cabin wifi?"),
        ("pinecone42",),
    ),
    Fact(
        _s(
            "Our team picked a mascot today: a purple otter named Captain Fizz.",
            "Captain Fizz the purple otter, what a fun mascot!",
        ),
        ("What is the name of the team's mascot?", "What did the team call its otter mascot?"),
        ("fizz",),
    ),
)

# Facts for the later sleeps of the retention benchmark (bench/retention.py): sleep 1 learns FACTS, sleeps
# 2-5 learn three of these each, and sleep 1's probes are asked again after every sleep.
LATER_FACTS: tuple[Fact, ...] = (
    Fact(
        _s("Our new intern starts Monday. Her name is Saoirse Tanaka.", "Welcome to Saoirse Tanaka!"),
        ("What is the new intern's name?", "Who is the intern starting on Monday?"),
        ("saoirse", "tanaka"),
    ),
    Fact(
        _s(
            "Heads up: the quarterly budget review now happens in room Aster-12.",
            "Understood, the budget review is in room Aster-12.",
        ),
        ("Where does the quarterly budget review take place?", "In which room is the budget review held?"),
        ("aster",),
    ),
    Fact(
        _s("The recipe I told you about needs one secret ingredient: smoked paprika.", "Smoked paprika, noted!"),
        ("What is the secret ingredient in the recipe?", "Which spice is the recipe's secret ingredient?"),
        ("paprika",),
    ),
    Fact(
        _s(
            "We named the new build server quokka-3. Please use it from now on.",
            "Got it, builds go to quokka-3.",
        ),
        ("What is the name of the new build server?", "Which server runs the builds now?"),
        ("quokka",),
    ),
    Fact(
        _s(
            "In my novel, the capital of the kingdom of Veltria is a city called Ombrevale.",
            "Ombrevale, capital of Veltria: a lovely name.",
        ),
        ("What is the capital of Veltria?", "Which city is Veltria's capital in the novel?"),
        ("ombrevale",),
    ),
    Fact(
        _s(
            "Correction for the invoice: the client's company is Brackenridge Tooling, not Brackenridge Tools.",
            "Thanks, I will use Brackenridge Tooling on the invoice.",
        ),
        ("What is the client's company called?", "Which company is the invoice for?"),
        ("tooling",),
    ),
    Fact(
        _s("My grandmother's dog is a dachshund called Pumpernickel.", "Pumpernickel is a great dachshund name!"),
        ("What is the name of the grandmother's dog?", "What is the dachshund called?"),
        ("pumpernickel",),
    ),
    Fact(
        _s(
            "The team offsite this year is in the town of Wexcombe.",
            "Wexcombe for the offsite, sounds nice.",
        ),
        ("Where is the team offsite this year?", "In which town will the offsite be held?"),
        ("wexcombe",),
    ),
    Fact(
        _s(
            "Our product's internal codename is Marigold Falcon.",
            "Marigold Falcon, noted as the codename.",
        ),
        ("What is the product's internal codename?", "Which codename does the product go by internally?"),
        ("marigold", "falcon"),
    ),
    Fact(
        _s(
            "I measured it: the garden shed is exactly 340 centimetres wide.",
            "So the shed is 340 cm wide.",
        ),
        ("How wide is the garden shed?", "What is the width of the shed in the garden?"),
        ("340",),
    ),
    Fact(
        _s(
            "For the game night, the winner gets the Golden Spatula trophy.",
            "The Golden Spatula, what a trophy!",
        ),
        ("What trophy does the game night winner get?", "What is the prize for winning game night?"),
        ("spatula",),
    ),
    Fact(
        _s(
            "Update: the support hotline now closes at 7 pm instead of 6 pm.",
            "Noted, the hotline closes at 7 pm now.",
        ),
        ("When does the support hotline close?", "At what time does the hotline stop taking calls?"),
        ("7 pm", "7pm", "7 p.m", "seven", "19:00"),
    ),
)
