"""What a session told, as self-contained statements in the assistant's voice: the targets a sleep teaches.

The knowledge of a session is in what the user said (a document pasted, a correction, a task's result). The
served model's own replies add nothing it did not know, and at small sizes they are often off-topic or
invented (measured: docs/BENCHMARKS.md), so statements come from the user's messages only. Each message
becomes units a fresh conversation can use as an answer:

- short messages stay whole (their sentences lean on each other: "My daughter Elowen just started lessons.
  She plays the cello."); long ones (documents) are split into sentences, and a sentence that opens on a
  pronoun is joined to the one before it, so "it" keeps its referent;
- questions and bare requests ("Please file them.") are dropped, as are sentences that name nothing;
- first person becomes second person ("my office" -> "your office"): the assistant states it back to the user;
- a later unit that corrects an earlier one ("Correction: ... moved to Room B, not Room A") replaces the
  earlier unit it shares a name with, so the old value is not taught;
- a value a unit denies ("not Room A", "moved from Room A", "instead of 3390") is not one of its spans: no
  question is keyed on it and no probe expects it as the answer (it still matches what it corrects).

Each unit carries its *spans*: the names, codes, numbers and dates it states. Questions are keyed on them, in
both directions (consolidation/targets.py), and an answer is checked by whether it states them
(`states_span`). All rules here are lexical and English-centric; they are measured, not assumed, in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from consolidation.sessions import Memory

LONG_MESSAGE_WORDS = 60  # above this a message is split into sentences (a document, not a remark)
DOCUMENT_SENTENCE_WORDS = 8  # in a document, a sentence this long is kept even when it names nothing

_SENTENCE = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)]*\s+|\n+")
_WORD = re.compile(r"[^\W_][\w'\u2019-]*")
_REQUEST = re.compile(
    r"^(please|pls|can you|could you|would you|will you|thanks|thank you|ok|okay|cheers|great|hi|hello|hey|"
    r"remember|note that|noted)\b", re.I
)  # fmt: skip
_FRAMING = re.compile(r"^[^.!?]{0,80}:\s*$")  # "Here are the notes from today's meeting:"
_PRONOUN_START = re.compile(r"^(he|she|it|they|this|that|these|those|his|her|its|their)\b", re.I)
_CORRECTION = re.compile(r"\b(correction|actually|instead of|no longer|changed to|moved to|update[d]?|not)\b", re.I)
_DENIED = re.compile(
    r"\b(?:not|no longer|instead of|rather than|formerly|previously|(?:moved|changed|switched|shifted) from)"
    r"\s+(?:the\s+|a\s+|an\s+)?$", re.I
)  # fmt: skip
_NAMED = re.compile(r"\b(?:called|named|codename[d]?|nicknamed)\s+['\"\u201c]?([A-Za-z0-9][\w-]*)", re.I)
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December")  # fmt: skip
_MONTHS = [m.lower() for m in MONTH_NAMES] + "jan feb mar apr jun jul aug sep sept oct nov dec".split()
_COMMON_CAPS = frozenset(
    """i the a an my our your his her their its this that these those there here it we you he she they what when
    where which who why how please thanks correction update note step today tomorrow yesterday also and but
    so then if for in on at by to of from with as is are was were be been do does did can could will would
    should ok okay yes no hi hello hey dear quick heads some news sure great fine""".split()
)  # fmt: skip

# First person -> second person, checked longest first. "I" is always the subject: "you"; "me" always "you".
_PERSON = [
    ("i am", "you are"), ("i was", "you were"), ("i'm", "you're"), ("i've", "you've"), ("i'd", "you'd"),
    ("i'll", "you'll"), ("we're", "you're"), ("we've", "you've"), ("we'd", "you'd"), ("we'll", "you'll"),
    ("we are", "you are"), ("we were", "you were"), ("myself", "yourself"), ("ourselves", "yourselves"),
    ("mine", "yours"), ("ours", "yours"), ("my", "your"), ("our", "your"), ("me", "you"), ("us", "you"),
    ("we", "you"), ("i", "you"),
]  # fmt: skip
_PERSON_RE = re.compile(r"(?<![\w'\u2019-])(" + "|".join(re.escape(a) for a, _ in _PERSON) + r")(?![\w'\u2019-])", re.I)
_PERSON_MAP = dict(_PERSON)


@dataclass(frozen=True)
class Statement:
    """One self-contained unit of what a session told, and the names, codes, numbers and dates it states."""

    session_id: str
    text: str
    spans: tuple[str, ...]
    source: str  # the user's own words it came from
    corrects: bool = False  # it corrects something said before
    denied: tuple[str, ...] = ()  # values it names only to deny ("not Room A"): keys for corrections, no answers

    @property
    def keys(self) -> set[str]:
        """Every value it names, stated or denied, lower case: what a correction is matched on."""
        return {x.lower() for x in (*self.spans, *self.denied)}


def to_second_person(text: str) -> str:
    """The user's "my office is ..." as the assistant says it back: "your office is ...". Capitals kept."""

    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        out = _PERSON_MAP[word.lower().replace("\u2019", "'")]
        if word == "US":  # the country, not "us"
            return word
        starts = m.start() == 0 or bool(re.search(r"[.!?:]\s*$", text[: m.start()]))
        capital = word[0].isupper() and (word[0] != "I" or starts)  # "I" is capitalized anywhere
        return out[0].upper() + out[1:] if capital else out

    swapped = _PERSON_RE.sub(swap, text)
    return swapped[0].upper() + swapped[1:] if swapped else swapped


def spans_of(text: str) -> tuple[str, ...]:
    """The specifics a unit states, in order: runs of names (capitalized words that are not common words or a
    sentence's plain first word), words with a digit (codes, numbers; a month before a number is kept with it),
    quoted short strings, and the word after "called"/"named"."""
    found: list[str] = []
    for m in _NAMED.finditer(text):
        found.append(m.group(1).strip("-'"))
    for m in re.finditer(r"['\"\u201c\u2018]([^'\"\u201d\u2019]{2,40})['\"\u201d\u2019]", text):
        if len(m.group(1).split()) <= 4:
            found.append(m.group(1).strip())
    words = [(m.group(0).strip("-'\u2019"), m.start()) for m in _WORD.finditer(text)]
    run: list[str] = []
    end = 0
    for i, (w, at) in enumerate([*words, ("", len(text))]):
        if run and text[end:at].strip():  # punctuation between two words ends a run: "Guild: Ann Lee"
            found.append(" ".join(run))
            run = []
        end = at + len(w)
        initial = i == 0 or bool(re.search(r"[.!?:]\s*$", text[:at]))
        bare = re.sub(r"['\u2019]s$", "", w)
        name = bool(bare) and bare[0].isupper() and bare.lower() not in _COMMON_CAPS and not initial
        name = name or (bool(bare) and bare[0].isupper() and initial and bare.lower() not in _COMMON_CAPS
                        and i + 1 < len(words) and words[i + 1][0][:1].isupper())  # fmt: skip
        digit = any(c.isdigit() for c in bare)
        month = bare.lower() in _MONTHS and i + 1 < len(words) and words[i + 1][0][:1].isdigit()
        clock = bool(run) and bare.lower() in ("am", "pm") and run[-1].isdigit()  # "7 pm", not "7"
        if bare and (name or digit or month or clock):
            run.append(bare)
            continue
        if run:
            found.append(" ".join(run))
            run = []
    out: list[str] = []
    for s in found:
        key = s.lower()
        inside = any(states_span(o, s) for o in found if o.lower() != key)
        if key in _COMMON_CAPS or inside or key in map(str.lower, out):
            continue  # a part of a longer span ("Captain" of "Captain Fizz") adds nothing
        out.append(s)
    return tuple(out)


def states_span(answer: str, span: str) -> bool:
    """Whole-word, case-insensitive: "quokka-35" does not state "quokka-3", "17 pm" does not state "7 pm"."""
    return _norm(span) in _norm(answer)


def _norm(text: str) -> str:
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def _informative(sentence: str) -> bool:
    s = sentence.strip()
    if not s or s.endswith("?") or _FRAMING.match(s):
        return False
    return not (_REQUEST.match(s) and not spans_of(s))


def units(message: str) -> list[str]:
    """A user message as self-contained units (see the module docstring), in its own words: the sentences that
    name something (in a document, also the longer ones that do not), each with the pronoun-led sentences after
    it; one unit for a short message."""
    out: list[str] = []
    document = len(message.split()) > LONG_MESSAGE_WORDS
    joinable = False  # the last sentence was kept, so a pronoun-led one after it has its referent
    for s in sentences(message):
        if not _informative(s):
            joinable = False
        elif joinable and _PRONOUN_START.match(s):
            out[-1] = f"{out[-1]} {s}"
        elif spans_of(s) or (document and len(s.split()) >= DOCUMENT_SENTENCE_WORDS):
            out.append(s)
            joinable = True
        else:
            joinable = False
    return out if document or not out else [" ".join(out)]


_LEAD = re.compile(r"^([^.!?:]{1,60}):\s+(?=\S)")


def strip_framing(text: str) -> str:
    """Drop a leading "Put this in the calendar:" or "Correction:" that names nothing: the answer starts on the
    fact, so the student's first words already decide which fact it states."""
    m = _LEAD.match(text)
    if not m or spans_of(m.group(1)):
        return text
    rest = text[m.end() :]
    return rest[0].upper() + rest[1:]


def statements(memory: Memory) -> list[Statement]:
    """Every unit of the session's user messages, second person, with its spans; corrected units dropped."""
    found: list[Statement] = []
    for message in memory.transcript:
        if message["role"] != "user":
            continue
        for unit in units(message["content"]):
            text = strip_framing(to_second_person(unit))
            named = spans_of(text)
            denied = tuple(s for s in named if denies(text, s))
            spans = tuple(s for s in named if s not in denied)
            found.append(Statement(memory.session_id, text, spans, unit, bool(_CORRECTION.search(unit)), denied))
    return supersede(found)


def span_shape(span: str) -> str:
    """What kind of specific a span is: "date" (a month first), "digit" (a code, number, time), else "name"."""
    words = span.split()
    if words and words[0].lower() in _MONTHS:
        return "date"
    return "digit" if any(c.isdigit() for c in span) else "name"


def span_pattern(span: str) -> re.Pattern[str]:
    """Where a span occurs in a text: whole words, any case ("quokka-3" is not inside "quokka-35")."""
    return re.compile(r"(?<![\w-])" + re.escape(span) + r"(?![\w-])", re.I)


def denies(text: str, span: str) -> bool:
    """Does the text name `span` only after a negation ("moved to Room B, not Room A")? Then a question whose
    answer is `span` would teach, and a probe expecting it would score, the value the user took back."""
    at = [m.start() for m in span_pattern(span).finditer(text)]
    return bool(at) and all(_DENIED.search(text[:i]) for i in at)


def supersede(found: list[Statement]) -> list[Statement]:
    """Drop each statement that a later correcting statement shares a span with: "the fair is in Room A" is
    not taught once "Correction: the fair moved to Room B, not Room A" was said."""
    keep: list[Statement] = []
    for i, s in enumerate(found):
        if any(c.corrects and s.keys & c.keys for c in found[i + 1 :]):
            continue
        keep.append(s)
    return keep
