"""Is a teacher answer grounded in the memory? A cheap lexical verifier for the teacher's in-context answers.

Measured on the default model (docs/BENCHMARKS.md): a 135M teacher with the session in context still invents.
Asked "What does the user's server have?" it answers "a Linux server running Bluefin-7 on Ubuntu 20.04" - the
fact, wrapped in made-up detail - and asked an off-topic question it answers fluently with no fact at all.
Context gain (the context raises the answer's likelihood) keeps both. So an answer is cut to its first
sentence (the answer proper; what follows is where invention starts) and kept only if

- **supported**: at least `min_support` of its content words occur in the memory or the question, and
- **informative**: it holds at least `min_novel` content words from the memory that the question does not,
  i.e. something only the memory could have supplied.

Words are compared on a crude stem (no final "s", then a 5-letter prefix), so "batteries" supports
"battery" and "works" supports "work". The stopword list is English;
in other languages more words count as content, which makes the check stricter, not looser.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

_STOPWORDS = frozenset(
    """a an the is are was were be been being am do does did done have has had having i you he she it we they
    me him her us them my your his its our their mine yours this that these those what which who whom whose
    when where why how of in on at to for from by with about as into onto over under after before than then
    so and or but nor not no yes if there here can could will would should may might must shall just also very
    too more most some any all each every other such only own same up down out off again further once now
    don't doesn't didn't isn't aren't wasn't weren't i'm it's that's let's i'll i've you're we're they're
    one new sure okay ok please thanks thank got great well really""".split()
)
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "-'"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")


@dataclass(frozen=True)
class Grounding:
    support: float  # share of the answer's content words found in the memory or the question
    novel: int  # distinct content words from the memory that the question does not hold


def first_sentence(text: str) -> str:
    text = text.strip()
    return _SENTENCE_END.split(text, maxsplit=1)[0].strip() if text else ""


def grounding(answer: str, memory: str, question: str) -> Grounding:
    words = [w for w in _words(answer) if w not in _STOPWORDS]
    if not words:
        return Grounding(0.0, 0)
    in_memory = {_key(w) for w in _words(memory)}
    in_question = {_key(w) for w in _words(question)}
    supported = [w for w in words if _key(w) in in_memory or _key(w) in in_question]
    novel = {_key(w) for w in words if _key(w) in in_memory and _key(w) not in in_question}
    return Grounding(len(supported) / len(words), len(novel))


def is_grounded(answer: str, memory: str, question: str, *, min_support: float = 0.75, min_novel: int = 1) -> bool:
    g = grounding(answer, memory, question)
    return g.support >= min_support and g.novel >= min_novel


def _words(text: str) -> list[str]:
    return [w.strip("-'") for w in text.lower().translate(_PUNCT).split() if w.strip("-'")]


def _key(word: str) -> str:
    if len(word) > 3 and word.endswith("s"):
        word = word[:-1]
    return word[:5]
