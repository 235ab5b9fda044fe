"""Self-generated probe questions about a memory, and token-F1 answer matching.

A 135M model writes poor questions unless guided, so the teacher (memory in context) is prompted with a
few-shot template and its outputs are filtered: one line, a question mark, 3-30 words, not a copy of the
conversation, no duplicates.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from consolidation.policy import Policy
from consolidation.sessions import Memory

_FEW_SHOT = [
    (
        "user: My cat is called Miso and she is three years old.\nassistant: Miso sounds lovely!",
        "What is the name of the user's cat?",
    ),
    (
        "user: Our team moved the launch of Project Vela to March 14 because of a supplier delay.\n"
        "assistant: Noted: Project Vela now launches on March 14.",
        "When does Project Vela launch?",
    ),
]
_INSTRUCTION = "Write one short question about a fact stated in this conversation. Reply with the question only."
_PARAPHRASE = "Rewrite this question with different words, keeping its meaning. Reply with the question only."


def question_prompt(policy: Policy, memory: Memory) -> list[int]:
    messages: list[dict[str, str]] = []
    for convo, question in _FEW_SHOT:
        messages += [{"role": "user", "content": f"Conversation:\n{convo}\n\n{_INSTRUCTION}"}]
        messages += [{"role": "assistant", "content": question}]
    messages += [{"role": "user", "content": f"Conversation:\n{memory.render(3000)}\n\n{_INSTRUCTION}"}]
    return policy.chat_ids(messages)


def generate_questions(
    policy: Policy, memories: list[Memory], n: int, temperature: float = 0.9, max_new_tokens: int = 40
) -> list[list[str]]:
    """Up to n distinct, well-formed questions about each memory (teacher view), sampled in one batch."""
    per = max(n * 2, 4)
    prompts = [question_prompt(policy, m) for m in memories]
    samples = policy.generate(prompts, student=False, n=per, temperature=temperature, max_new_tokens=max_new_tokens)
    result = []
    for i, memory in enumerate(memories):
        seen = {_norm(t) for t in memory.user_turns}
        out: list[str] = []
        for ids in samples[i * per : (i + 1) * per]:
            q = clean_question(policy.decode(ids))
            if q and _norm(q) not in seen:
                seen.add(_norm(q))
                out.append(q)
            if len(out) == n:
                break
        result.append(out)
    return result


def paraphrases(policy: Policy, questions: list[str], n: int = 2) -> list[list[str]]:
    """Up to n rewordings of each question, sampled in one batch."""
    prompts = [policy.chat_ids([{"role": "user", "content": f"{_PARAPHRASE}\n\nQuestion: {q}"}]) for q in questions]
    samples = policy.generate(prompts, student=False, n=n, temperature=0.9)
    result = []
    for i, question in enumerate(questions):
        found = {clean_question(policy.decode(ids)) for ids in samples[i * n : (i + 1) * n]}
        result.append(sorted(q for q in found if q and _norm(q) != _norm(question)))
    return result


def clean_question(text: str) -> str | None:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = re.sub(r"^(question|q)\s*[:.-]\s*", "", line, flags=re.I).strip(" \"'")
    if not line.endswith("?") or not 3 <= len(line.split()) <= 30:
        return None
    return line


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 after lower-casing and dropping punctuation and articles."""
    p, r = _tokens(prediction), _tokens(reference)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def _tokens(text: str) -> list[str]:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return [w for w in text.split() if w not in {"a", "an", "the"}]


def _norm(text: str) -> str:
    return " ".join(_tokens(text))
