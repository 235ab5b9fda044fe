"""Is a teacher answer grounded in the memory? A cheap lexical verifier for the teacher's in-context answers.

Measured on the default model (docs/BENCHMARKS.md): a 135M teacher with the session in context still invents.
Asked "What does the user's server have?" it answers "a Linux server running Bluefin-7 on Ubuntu 20.04" - the
fact, wrapped in made-up detail - and asked an off-topic question it answers fluently with no fact at all.
Context gain (the context raises the answer's likelihood) keeps both. So an answer is cut to its first
sentence (the answer proper; what follows is where invention starts) and kept only if

- **supported**: at least `min_support` of its content words occur in the memory or the question, and
- **informative**: it holds at least `min_novel` content words from the memory that the question does not,
  i.e. something only the memory could have supplied, and
- **not inventing specifics**: every number (any word with a digit, hyphenated parts taken apart) and every
  capitalized word past the first occurs in the memory or the question. Measured on the default model
  (docs/BENCHMARKS.md): the support share alone kept "The cabin wifi password is 123456." (3 of 4 content words
  are in the session), and the student learned the wrong password; such a confident wrong value is almost always
  a number or a name the session never said.

An answer whose first sentence wraps the fact in invention may keep its first clause instead (grounded_part).
The same words judge a student's closed-book attempt (answer_f1): it scores only what the attempt adds to the
question, so echoing the question earns nothing.

Words are compared on a crude stem (no final "s", then a 5-letter prefix), so "batteries" supports
"battery" and "works" supports "work". The stopword list is English;
in other languages more words count as content, which makes the check stricter, not looser.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

_STOPWORDS = frozenset(
    """a an the is are was were be been being am do does did done have has had having i you he she it we they
    me him her us them my your his its our their mine yours this that these those what which who whom whose
    when where why how of in on at to for from by with about as into onto over under after before than then
    so and or but nor not no yes if there here can could will would should may might must shall just also very
    too more most some any all each every other such only own same up down out off again further once now
    don't doesn't didn't isn't aren't wasn't weren't i'm it's that's let's i'll i've i'd you're we're they're let
    one new sure okay ok please thanks thank got great well really""".split()
)
_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "-'"})
# A sentence ends at . ! or ? before a space, a closing quote or bracket included: 'is "The Cello." She' ends
# after the quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|(?<=[.!?][\"'\u201d\u2019)\]])\s|\n")
_ROLE_LABEL = re.compile(r"^(user|assistant)\s*:\s*", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[,;:(]\s|\s[-\u2013\u2014]\s")


@dataclass(frozen=True)
class Grounding:
    support: float  # share of the answer's content words found in the memory or the question
    novel: int  # distinct content words from the memory that the question does not hold
    invented: tuple[str, ...] = ()  # numbers and names the answer states that neither memory nor question holds

    def passes(self, min_support: float, min_novel: int) -> bool:
        return self.support >= min_support and self.novel >= min_novel and not self.invented


def first_sentence(text: str) -> str:
    # The teacher reads the session as "user: ..." lines and sometimes answers in that form: the label is not
    # part of the answer.
    text = _ROLE_LABEL.sub("", text.strip())
    return _SENTENCE_END.split(text, maxsplit=1)[0].strip() if text else ""


def grounded_part(
    answer: str, memory: str, question: str, *, min_support: float = 0.75, min_novel: int = 1
) -> str | None:
    """The answer proper, if grounded: its first sentence, or that sentence's first clause when the clause is
    better supported ("The meeting is on Thursday, December 21st." keeps "The meeting is on Thursday": the
    fact, without the invented date). None if neither is grounded."""
    sentence = first_sentence(answer)
    clause = _CLAUSE_END.split(sentence, maxsplit=1)[0].strip()
    best: tuple[float, str] | None = None
    for part in dict.fromkeys([sentence, clause]):  # the sentence first: it wins ties
        words = _words(part)
        if not words or words[-1] in _STOPWORDS:
            # A fragment that stops on a function word ("The cabin wifi password is", cut before an invented
            # value, or an answer cut off by the token limit) would teach the student to stop there.
            continue
        g = grounding(part, memory, question)
        if g.passes(min_support, min_novel) and (best is None or g.support > best[0]):
            best = (g.support, part)
    return best[1] if best else None


def grounding(answer: str, memory: str, question: str) -> Grounding:
    words = [w for w in _words(answer) if w not in _STOPWORDS]
    if not words:
        return Grounding(0.0, 0)
    in_memory = {_key(w) for w in _words(memory)}
    in_question = {_key(w) for w in _words(question)}
    supported = [w for w in words if _key(w) in in_memory or _key(w) in in_question]
    novel = {_key(w) for w in words if _key(w) in in_memory and _key(w) not in in_question}
    return Grounding(len(supported) / len(words), len(novel), invented_specifics(answer, memory + "\n" + question))


def invented_specifics(answer: str, source: str) -> tuple[str, ...]:
    """The numbers and names `answer` states that `source` does not: words with a digit (each hyphenated part
    with a digit on its own: "2018-2020-themed" needs 2018 and 2020) compared exactly, and capitalized words
    past the answer's first compared whole (no final "s": the 5-letter stem of the other checks would let
    "MediaMundo" pass on "media"). Day and month names count: an invented date is invented."""
    words = set(_words(source))
    known = words | {part for w in words for part in w.split("-")}
    known_names = {_singular(w) for w in known}
    invented: list[str] = []
    for i, raw in enumerate(_cased_words(answer)):
        word = raw.lower()
        if any(c.isdigit() for c in word):
            if word not in known and any(p not in known for p in word.split("-") if any(c.isdigit() for c in p)):
                invented.append(raw)
        elif i > 0 and raw[0].isupper() and word not in _STOPWORDS and _singular(word) not in known_names:
            invented.append(raw)
    return tuple(dict.fromkeys(invented))


def is_grounded(answer: str, memory: str, question: str, *, min_support: float = 0.75, min_novel: int = 1) -> bool:
    return grounding(answer, memory, question).passes(min_support, min_novel)


def answer_f1(answer: str, reference: str, question: str) -> float:
    """How well an answer states what the reference adds to the question: token F1 over content words (on
    their stems) that are not in the question. The judge of Dreaming and the gate: plain token F1 rewards an
    answer that echoes the question ("The cabin wifi password is sunflower." shares most of its words with
    "The cabin wifi password is pinecone42."), this scores only the fact. 0 when either side adds nothing."""
    asked = {_key(w) for w in _words(question)}
    said = Counter(k for k in (_key(w) for w in _words(answer) if w not in _STOPWORDS) if k not in asked)
    meant = Counter(k for k in (_key(w) for w in _words(reference) if w not in _STOPWORDS) if k not in asked)
    common = sum((said & meant).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(said.values()), common / sum(meant.values())
    return 2 * precision * recall / (precision + recall)


def is_content(word: str) -> bool:
    return word.lower() not in _STOPWORDS


def stem(word: str) -> str:
    """The crude stem the checks compare on (see the module docstring)."""
    return _key(word.lower())


def _words(text: str) -> list[str]:
    return [w.lower() for w in _cased_words(text)]


def _cased_words(text: str) -> list[str]:
    words = (w.strip("-'\u2019") for w in text.translate(_PUNCT).split())
    # A possessive is its noun: "Fizz's" is Fizz.
    return [w[:-2] if w.lower().endswith(("'s", "\u2019s")) else w for w in words if w]


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _key(word: str) -> str:
    return _singular(word)[:5]
