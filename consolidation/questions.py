"""Self-generated probe questions about a memory.

A 135M model writes poor questions unless guided, so the teacher is prompted with few-shot templates, two
ways: about the whole conversation, and about each user statement on its own (a short statement keeps a small
model on the fact; the whole conversation lets it ask about what the assistant said or combined). Outputs are
filtered: one line, a question mark, 3-30 words, not a copy of the conversation, no name borrowed from the
few-shot examples, no duplicates. A third kind needs no model: "What do you know about X?" for the session's
salient phrases (topic_questions). Questions that have no grounded answer are dropped later (build_examples).
"""

from __future__ import annotations

import re
import string

from consolidation.grounding import is_content, stem
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
_STATEMENT_SHOTS = [
    (
        "Our team moved the launch of Project Vela to March 14 because of a supplier delay.",
        "When does Project Vela launch?",
    ),
    ("The backup job now runs on the server called orca-2.", "Which server runs the backup job?"),
    ("In my novel, the river Sarn flows red after a storm.", "What colour does the river Sarn turn after a storm?"),
]
# Names the few-shot examples introduce: a question using one the memory lacks was copied from an example.
_SHOT_NAMES = frozenset({"miso", "vela", "orca-2", "orca", "sarn"})
_STATEMENT_INSTRUCTION = "Write one short question that this statement answers. Reply with the question only."
_MAX_STATEMENTS = 8  # user statements per memory prompted on their own (the latest ones)
_INSTRUCTION = "Write one short question about a fact stated in this conversation. Reply with the question only."
_PARAPHRASE = "Rewrite this question with different words, keeping its meaning. Reply with the question only."


def question_prompt(policy: Policy, memory: Memory) -> list[int]:
    return _few_shot(policy, _FEW_SHOT, "Conversation:\n", memory.render(3000), _INSTRUCTION)


def statement_prompt(policy: Policy, statement: str) -> list[int]:
    return _few_shot(policy, _STATEMENT_SHOTS, "Statement: ", statement[:1500], _STATEMENT_INSTRUCTION)


def _few_shot(policy: Policy, shots: list[tuple[str, str]], label: str, text: str, instruction: str) -> list[int]:
    messages: list[dict[str, str]] = []
    for example, question in shots:
        messages += [{"role": "user", "content": f"{label}{example}\n\n{instruction}"}]
        messages += [{"role": "assistant", "content": question}]
    messages += [{"role": "user", "content": f"{label}{text}\n\n{instruction}"}]
    return policy.chat_ids(messages)


def generate_questions(
    policy: Policy, memories: list[Memory], n: int, temperature: float = 0.9, max_new_tokens: int = 40
) -> list[list[str]]:
    """Up to n distinct, well-formed questions about each memory (teacher view), sampled in one batch:
    questions about the whole conversation and about each user statement, interleaved."""
    per = max(n, 4)
    prompts: list[list[int]] = []
    owners: list[tuple[int, int]] = []  # (memory index, source: 0 = conversation, 1 + j = statement j)
    for i, m in enumerate(memories):
        prompts.append(question_prompt(policy, m))
        owners.append((i, 0))
        for j, statement in enumerate(m.user_turns[-_MAX_STATEMENTS:]):
            prompts.append(statement_prompt(policy, statement))
            owners.append((i, 1 + j))
    samples = policy.generate(prompts, student=False, n=per, temperature=temperature, max_new_tokens=max_new_tokens)
    sources: list[list[list[str]]] = [[] for _ in memories]
    for k, (i, _) in enumerate(owners):
        sources[i].append([policy.decode(ids) for ids in samples[k * per : (k + 1) * per]])
    result = []
    for memory, texts in zip(memories, sources, strict=True):
        seen = {_norm(t) for t in memory.user_turns}
        known = set(_tokens(memory.render()))
        out: list[str] = []
        for text in _interleave(texts):
            q = clean_question(text)
            if q and _norm(q) not in seen and not (set(_tokens(q)) & _SHOT_NAMES) - known:
                seen.add(_norm(q))
                out.append(q)
            if len(out) == n:
                break
        result.append(out)
    return result


_TOKEN = re.compile(r"[\w'\u2019-]+|[^\w\s]")
_TOPIC = "What do you know about {}?"
# Kept before a phrase; "a" becomes "the": the question refers to something the session introduced.
_DETERMINERS = {d: d for d in ("the", "my", "our", "your", "his", "her", "their")} | {"a": "the", "an": "the"}


def topic_questions(memory: Memory, limit: int = 4) -> list[str]:
    """'What do you know about X?' for the salient phrases of the user's turns, in order of appearance.

    The model's own questions mostly run one way: asked "What mineral glows green?", the teacher answers
    "Zorblat", which teaches the name from the colour but not the colour from the name (the reversal curse);
    measured on the default model, the facts missed after a sleep were the ones whose questions all ran the
    other way. A question keyed on each salient phrase makes the teacher state the memory from that phrase.
    Salient: a content word said in at least two of the session's messages (both sides talked about it),
    a capitalized word past a sentence's start (a name), or a word with a digit; a phrase is a run of them."""
    seen_in: dict[str, int] = {}
    for text in memory.messages():
        for key in {stem(t) for t in _TOKEN.findall(text) if t[0].isalnum()}:
            seen_in[key] = seen_in.get(key, 0) + 1
    phrases: dict[str, str] = {}  # the phrase without its determiner -> the phrase
    for text in memory.user_turns:
        run: list[str] = []
        tokens = _TOKEN.findall(text)
        for i, token in enumerate([*tokens, "."]):
            initial = i == 0 or tokens[i - 1] in {".", "!", "?", ":", "'", '"'}
            salient = (
                token[0].isalnum()
                and is_content(token)
                and len(token) > 2
                and (
                    seen_in.get(stem(token), 0) >= 2
                    or (token[0].isupper() and not initial)
                    or any(c.isdigit() for c in token)
                )
            )
            if salient:
                run.append(token)
            elif run:
                before = tokens[i - len(run) - 1].lower() if i > len(run) else ""
                det = [_DETERMINERS[before]] if before in _DETERMINERS else []  # "about the office", not "office"
                phrases.setdefault(" ".join(run).lower(), " ".join(det + run))
                run = []
    return [_TOPIC.format(p) for p in list(phrases.values())[:limit]]


def _interleave(lists: list[list[str]]) -> list[str]:
    return [x for row in zip(*lists, strict=True) for x in row]


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


def _tokens(text: str) -> list[str]:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return [w for w in text.split() if w not in {"a", "an", "the"}]


def _norm(text: str) -> str:
    return " ".join(_tokens(text))
