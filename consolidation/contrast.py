"""Contrast pairs: a trained question asked about an untold value, and the told answer pushed down there.

Control probes (bench/controls.py) found most of a sleep's closed-book recall tied to a question's wording, not
to what it names: after "the Kroxhea Gala is on April 14", "When is the Brisk Gala?" is answered "April 14" too,
and "Which event is on May 2?" "the Kroxhea Gala". A target trains only the told pair, so nothing in it makes
the named value (the *cue*) matter. Here each target whose question names one of its statement's spans gets a
contrast: the cue swapped for an untold value of its shape (another date, other digits, a made-up name) in the
question and in the statement, and an unlikelihood term (Welleck et al., 2020) on the first token of the value
the question asks for, at the place the statement states it: -log(1 - p). It teaches no answer for the untold
value (a trained refusal cost recall: docs/BENCHMARKS.md, "Control probes"), and its gradient is about p, so it
acts only where the student gives the told value for the untold cue.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from consolidation.policy import Policy
from consolidation.statements import MONTH_NAMES, span_pattern, span_shape
from consolidation.targets import Target

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class Contrast:
    """A target's question and statement with the cue swapped for an untold value, and where to push down."""

    question: str
    prompt: list[int]  # the student's chat prompt for `question`
    answer: list[int]  # the swapped statement, up to and including the pushed-down token
    position: int  # index in `answer` of the told value's first token

    @property
    def token(self) -> int:
        return self.answer[self.position]


def untold(span: str, told: str, policy: Policy, rng: random.Random) -> str | None:
    """A value of `span`'s shape that `told` (lower-cased) does not hold: another date; the digits redrawn; in a
    name, its rarest word replaced by a made-up one (the kind word, "Gala", stays: the contrast is between two
    galas). None when no such value is found."""
    shape = span_shape(span)
    for _ in range(20):
        if shape == "date":
            other = f"{rng.choice(MONTH_NAMES)} {rng.randint(2, 28)}"
        elif shape == "digit":
            other = "".join(str(rng.randint(0, 9)) if c.isdigit() else c for c in span)
        else:  # the name's rarest word (the one the tokenizer splits most): "Kroxhea Gala" -> "Vobipo Gala"
            words = span.split()
            pieces = [len(policy.tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in words]
            rarest = pieces.index(max(pieces))
            other = " ".join(_made_up(len(w), rng) if i == rarest else w for i, w in enumerate(words))
        if other.lower() != span.lower() and not span_pattern(other).search(told):
            return other
    return None


def _made_up(length: int, rng: random.Random) -> str:
    word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(max(2, (length + 1) // 2)))
    return word[: max(4, length)].capitalize()


def contrast(policy: Policy, target: Target, told: str, rng: random.Random) -> Contrast | None:
    """`target`'s contrast, or None when its question names no span of its one statement, or asks for none the
    statement states after the swap."""
    if len(target.statements) != 1:
        return None
    text = target.statements[0].text
    cues = [s for s in target.statements[0].spans if span_pattern(s).search(target.question)]
    values = [s for s in target.expected if s not in cues and span_pattern(s).search(text)]
    if not cues or not values:
        return None
    cue = rng.choice(cues)
    other = untold(cue, told, policy, rng)
    if other is None:
        return None
    question = span_pattern(cue).sub(lambda _: other, target.question, count=1)
    swapped = span_pattern(cue).sub(lambda _: other, text)
    found = span_pattern(values[0]).search(swapped)
    if found is None:  # the value overlapped the cue
        return None
    enc = policy.tokenizer(swapped, add_special_tokens=False, return_offsets_mapping=True)
    position = next(i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > found.start())
    prompt = policy.chat_ids([{"role": "user", "content": question}])
    return Contrast(question, prompt, list(enc["input_ids"][: position + 1]), position)


def contrasts(policy: Policy, targets: list[Target], told: list[str], seed: int) -> dict[str, Contrast]:
    """A contrast for each target that has one, by the target's question; no untold value is one `told` (every
    statement the sleep trains or replays) holds."""
    rng = random.Random(f"contrast-{seed}")  # its own generator: the other draws stay as they were
    text = " ".join(told).lower()
    out: dict[str, Contrast] = {}
    for t in targets:
        c = contrast(policy, t, text, rng)
        if c is not None:
            out[t.question] = c
    return out


def unlikelihood(policy: Policy, pairs: list[Contrast]) -> torch.Tensor:
    """Mean over `pairs` of -log(1 - p(told value's first token | untold question, swapped statement so far))."""
    logits, _, _ = policy.completion_logits([c.prompt for c in pairs], [c.answer for c in pairs], student=True)
    rows = torch.arange(len(pairs), device=logits.device)
    at = torch.tensor([c.position for c in pairs], device=logits.device)
    tokens = torch.tensor([c.token for c in pairs], device=logits.device)
    logp = torch.log_softmax(logits[rows, at].float(), dim=-1)[rows, tokens]
    return -torch.log1p(-logp.exp().clamp(max=1 - 1e-6)).mean()
