"""Generic prompts: what a sleep rehearses (replay), where its drift is watched while it trains (monitor: the
drift budget, consolidation/drift.py) and, separately, where the gate measures it (anchors).

Drift is measured on prompts that share no template with anything trained on: a low anchor KL then means
generic behaviour held, not that the replayed answers were memorised (tests/consolidation/test_anchors.py
checks that no anchor or monitor prompt opens with the same three words as a replay prompt or a keyed question
template, and that no monitor prompt opens like an anchor: the gate's check stays independent of what training
watched).

Replay includes the keyed question templates of consolidation/targets.py asked about well-known things, so
that learning "What do you know about Neakound Boathouse?" does not teach the model to answer every such
question with something from a session.
"""

from __future__ import annotations

from consolidation.targets import KEYED_TEMPLATES

ANCHOR_PROMPTS: tuple[str, ...] = (
    "Name the three primary colours.",
    "Which planet is closest to the Sun?",
    "Explain briefly why the sky looks blue.",
    "List two uses of copper.",
    "Describe a rainbow in one sentence.",
    "Who wrote the play Hamlet?",
    "Convert 3 kilometres to metres.",
    "Why do leaves change colour in autumn?",
    "Suggest a title for a short story about a lighthouse.",
    "Define the word 'generous'.",
    "Share what you know about the Sahara desert.",
    "Summarise the plot of Cinderella in two sentences.",
    "Which gas do humans breathe out?",
    "Recommend a healthy breakfast.",
    "Compose a haiku about snow.",
    "Is a tomato a fruit or a vegetable?",
)

MONITOR_PROMPTS: tuple[str, ...] = (
    "Give an example of a mammal that lives in the sea.",
    "How many legs does a spider have?",
    "Write a sentence using the word 'quiet'.",
    "Which instrument has black and white keys?",
    "Explain what a library is for.",
    "Suggest a name for a pet goldfish.",
    "Why do people wear sunglasses?",
    "Describe the taste of a lemon.",
)

_GENERIC_REPLAY: tuple[str, ...] = (
    "What is the capital of Italy?",
    "How many hours are in a day?",
    "Give me a synonym for 'big'.",
    "What is 6 times 9?",
    "What colour is the sky on a clear day?",
    "Translate 'good morning' into French.",
    "What is the freezing point of water in Celsius?",
    "Write one sentence about the moon.",
    "Who painted the Mona Lisa?",
    "What is the opposite of 'up'?",
    "How do you say 'hello' in German?",
    "What shape has three sides?",
    "What is the main ingredient in bread?",
    "Name a famous scientist.",
    "Write a short greeting for a birthday card.",
    "What language is spoken in Brazil?",
    "What is the largest ocean on Earth?",
    "Tell me a fun fact about elephants.",
    "What season comes after winter?",
    "Explain in one sentence what a computer is.",
)
_WELL_KNOWN = ("the Eiffel Tower", "Mount Everest", "the Amazon river", "Albert Einstein", "the Moon", "Tokyo",
               "the Great Wall of China", "penguins", "the Pacific Ocean", "Leonardo da Vinci", "volcanoes",
               "the Olympic Games")  # fmt: skip

REPLAY_PROMPTS: tuple[str, ...] = _GENERIC_REPLAY + tuple(
    KEYED_TEMPLATES[i % len(KEYED_TEMPLATES)].format(thing) for i, thing in enumerate(_WELL_KNOWN)
)
