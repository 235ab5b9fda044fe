"""How the teacher is asked to write a question about a statement, and what counts as a question.

A 135M model writes poor questions unless guided, so it gets few-shot examples: a statement, then one short
question it answers. Outputs are cleaned to one line ending in a question mark, 3-30 words; no name from
the few-shot examples may appear unless the statement has it (a copied example is not a question about it).
"""

from __future__ import annotations

import re

from consolidation.policy import Policy

_SHOTS = [
    (
        "Your team moved the launch of Project Vela to March 14 because of a supplier delay.",
        "When does Project Vela launch?",
    ),
    ("The backup job now runs on the server called orca-2.", "Which server runs the backup job?"),
    ("In your novel, the river Sarn flows red after a storm.", "What colour does the river Sarn turn after a storm?"),
]
_SHOT_NAMES = ("vela", "orca-2", "orca", "sarn")  # a question naming one of these copied an example
_INSTRUCTION = "Write one short question that this statement answers. Reply with the question only."
# Answer-aware: the same statements asked in both directions, the answer given (the name from the attribute and
# the attribute from the name).
_ANSWER_SHOTS = [
    (_SHOTS[0][0], "March 14", "When does Project Vela launch?"),
    (_SHOTS[1][0], "the backup job", "What runs on the server called orca-2?"),
    (_SHOTS[0][0], "Project Vela", "Which launch did your team move to March 14?"),
    (_SHOTS[1][0], "orca-2", "Which server runs the backup job?"),
    (_SHOTS[2][0], "Sarn", "Which river flows red after a storm?"),
]
_ANSWER_INSTRUCTION = (
    "Write one short question about the statement whose answer is the given answer. Reply with the question only."
)


def statement_prompt(policy: Policy, statement: str) -> list[int]:
    messages: list[dict[str, str]] = []
    for example, question in _SHOTS:
        messages += [{"role": "user", "content": f"Statement: {example}\n\n{_INSTRUCTION}"}]
        messages += [{"role": "assistant", "content": question}]
    messages += [{"role": "user", "content": f"Statement: {statement[:1500]}\n\n{_INSTRUCTION}"}]
    return policy.chat_ids(messages)


def answer_prompt(policy: Policy, statement: str, answer: str) -> list[int]:
    """Few-shot: write a question about the statement that `answer` answers (answer-aware question writing)."""
    messages: list[dict[str, str]] = []
    for example, ans, question in _ANSWER_SHOTS:
        messages += [{"role": "user", "content": f"Statement: {example}\nAnswer: {ans}\n\n{_ANSWER_INSTRUCTION}"}]
        messages += [{"role": "assistant", "content": question}]
    last = f"Statement: {statement[:1500]}\nAnswer: {answer}\n\n{_ANSWER_INSTRUCTION}"
    messages += [{"role": "user", "content": last}]
    return policy.chat_ids(messages)


def clean_question(text: str, source: str = "") -> str | None:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = re.sub(r"^(question|q)\s*[:.-]\s*", "", line, flags=re.I).strip(" \"'")
    if not line.endswith("?") or not 3 <= len(line.split()) <= 30:
        return None
    words = set(re.findall(r"[a-z0-9-]+", line.lower()))
    if any(n in words for n in _SHOT_NAMES if n not in source.lower()):
        return None
    return line
