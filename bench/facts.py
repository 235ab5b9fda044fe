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
        ("bluefin",),
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
