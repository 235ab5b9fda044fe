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
# Not replayed by default: four prompts for each category of a public instruction-data taxonomy (Databricks
# Dolly's: brainstorming, classification, closed QA, creative writing, general QA, information extraction, open
# QA, summarization). Replaying them lowered the gate's anchor KL more than drift on prompts nothing uses
# (bench/drift_where.py's audit set), and cost recall at about the rate any smaller step does: they partly
# cover the kinds of prompt the anchors are, so as a default they would soften the gate rather than lower
# drift (docs/BENCHMARKS.md, "Replay over a task taxonomy"). Kept for that ablation (bench.learning
# --task-replay), under the same opening rule.
TASK_REPLAY: tuple[str, ...] = (
    "Brainstorm three ideas for a rainy weekend.",
    "What are some ways to save water at home?",
    "Think of four names for a bakery.",
    "Come up with two games children can play outside.",
    "Sort these into animals and plants: oak, tiger, fern, eagle.",
    "Classify each as hot or cold: ice, soup, snow, coffee.",
    "Which of these are vehicles: car, apple, train, bicycle?",
    "Tell me whether each is a country or a city: Peru, Paris, Kenya, Oslo.",
    "Based on this text, how tall is the tree? 'The old oak in the park is 20 metres tall and 300 years old.'",
    "Read this and say who arrived first: 'Maria came at noon; Tom arrived an hour later.'",
    "From the note 'The shop opens at 9 and closes at 5', when does the shop close?",
    "According to 'Mars has two moons, Phobos and Deimos', how many moons does Mars have?",
    "Write a limerick about a cat.",
    "Write the opening line of a mystery novel.",
    "Create a two-line poem about the sea.",
    "Write a short dialogue between a teacher and a student.",
    "How does a refrigerator keep food cold?",
    "What makes a good friend?",
    "Why is exercise good for health?",
    "How do plants get energy?",
    "Pull out the dates from this sentence: 'We met on 3 May and again on 9 June.'",
    "Extract the names from: 'Anna and Ben went to see Carla.'",
    "What numbers appear in 'The box holds 12 eggs and costs 4 dollars'?",
    "List the colours mentioned in: 'She wore a red hat and green shoes.'",
    "What is photosynthesis?",
    "Who invented the telephone?",
    "What is the tallest mountain in Africa?",
    "How far is the Moon from the Earth?",
    "Summarize in one line: 'The team trained for months, lost the first match, then won the final.'",
    "Give a short summary of what a recipe is for.",
    "Sum up the benefits of reading books in one sentence.",
    "Briefly summarize how a bill becomes a law.",
)
_WELL_KNOWN = ("the Eiffel Tower", "Mount Everest", "the Amazon river", "Albert Einstein", "the Moon", "Tokyo",
               "the Great Wall of China", "penguins", "the Pacific Ocean", "Leonardo da Vinci", "volcanoes",
               "the Olympic Games")  # fmt: skip

REPLAY_PROMPTS: tuple[str, ...] = _GENERIC_REPLAY + tuple(
    KEYED_TEMPLATES[i % len(KEYED_TEMPLATES)].format(thing) for i, thing in enumerate(_WELL_KNOWN)
)
