"""The fixed anchor set: generic prompts whose answers must not drift when a sleep teaches new facts."""

from __future__ import annotations

ANCHOR_PROMPTS: tuple[str, ...] = (
    "What are the three primary colours?",
    "What is the capital of France?",
    "How many days are there in a week?",
    "Give me a synonym for 'happy'.",
    "What is 7 times 8?",
    "Name a planet in our solar system.",
    "What do bees make?",
    "Translate 'thank you' into Spanish.",
    "What is the boiling point of water at sea level in Celsius?",
    "Write one sentence about the ocean.",
    "Who wrote 'Romeo and Juliet'?",
    "What is the opposite of 'cold'?",
    "How many legs does a spider have?",
    "What gas do plants absorb from the air?",
    "Suggest a name for a pet goldfish.",
    "What is the largest mammal on Earth?",
)
