"""A procedural fact suite: fictional facts generated from templates by seed, told in sessions, probed both ways.

Nobody tuned a rule or a prompt to these facts: every name, code, number and date is drawn from a seeded
generator, so a new seed is a new suite. Tune on one seed, report on another (docs/BENCHMARKS.md says which).

Each fact has a *subject* and a *value*, both distinctive (a made-up name, a code, a number, a date), told in
one of eight kinds of session: a plain statement, a person's role, a date, a measurement, a naming, a
correction of an earlier value, a fact inside a longer document, a task trace. Probes ask for the value from
the subject (forward) and for the subject from the value (reverse), each in two phrasings that the sleep's own
question templates do not use (a check in bench/learning.py fails the run if any probe equals or rewords a
prompt the sleep trained on). Probes are phrased as a user would ask in a fresh chat ("Remind me, ...",
"Do you know which ...?"): the sleep never sees them, and the check catches a question the model happened to
write in the same words.

Scoring is strict (`is_correct`): an answer counts when it states the expected value as whole words after
normalisation (lower case, punctuation dropped), not inside another word ("17 pm" is not "7 pm", "quokka-35"
is not "quokka-3"), and, for a correction, when it does not state the old value as the answer.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass, field

KINDS = ("code", "role", "date", "measure", "naming", "correction", "document", "trace")


@dataclass(frozen=True)
class Probe:
    question: str
    expected: str  # the value a right answer states
    direction: str  # "forward" (subject -> value) or "reverse" (value -> subject)
    # The told value the question names, that a right answer depends on (bench/controls.py asks the question
    # again with an untold one in its place: an answer that states `expected` then was a guess).
    cue: str = ""


@dataclass(frozen=True)
class Fact:
    id: str
    kind: str
    turns: tuple[str, ...]  # what the user says, turn by turn (the served model answers each)
    probes: tuple[Probe, ...]
    wrong: tuple[str, ...] = field(default=())  # values whose statement makes an answer wrong (a corrected one)


# -- scoring ---------------------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # 1,250 -> 1250
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return f" {' '.join(text.split())} "


def states(answer: str, value: str) -> bool:
    """Does the answer state `value` as whole words (after normalisation)?"""
    return normalise(value) in normalise(answer)


_NEGATED = re.compile(r" (?:not|no longer|instead of|rather than|moved from|changed from|was) $")


def is_correct(answer: str, probe: Probe, wrong: tuple[str, ...] = ()) -> bool:
    if not states(answer, probe.expected):
        return False
    norm = normalise(answer)
    for old in wrong:
        old_n = normalise(old)
        at = norm.find(old_n)
        while at >= 0:
            # "Room Vesk, not room Aldo" states the old value only to negate it.
            if not _NEGATED.search(norm[: at + 1]):
                return False
            at = norm.find(old_n, at + 1)
    return True


# -- generators ------------------------------------------------------------------------------------------------

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr",
           "v", "w", "z", "th", "sh", "c", "j")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y")
_CODAS = ("", "", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "ck")
_ANIMALS = ("otter", "heron", "lynx", "marten", "ibis", "tapir", "gecko", "finch", "newt", "bison", "wombat")
_ROLES = ("treasurer", "head chef", "lighthouse keeper", "archivist", "choir director", "ferry captain",
          "beekeeper", "head librarian", "harbour master", "night editor")  # fmt: skip
_ORGS = ("guild", "cooperative", "society", "institute", "workshop", "foundation", "club", "observatory")
_PLACES = ("depot", "lodge", "cabin", "warehouse", "lab", "studio", "boathouse", "archive", "greenhouse")
_EVENTS = ("festival", "summit", "regatta", "hackathon", "gala", "retreat", "tournament", "fair")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip
_THINGS = (("bridge", "metres", "long"), ("tower", "metres", "tall"), ("tunnel", "metres", "long"),
           ("canal", "kilometres", "long"), ("wall", "metres", "high"), ("pier", "metres", "long"))  # fmt: skip
_NOUN = {"long": "length", "tall": "height", "high": "height"}
_OBJECTS = ("sailboat", "telescope", "robot", "greenhouse", "tractor", "glider", "drone", "kiln")
_TASKS = ("database migration", "backup restore", "nightly build", "load test", "index rebuild", "data export")
_FILLER = (
    "The meeting started at nine and ran a little late.",
    "Everyone agreed that the coffee machine needs replacing.",
    "Parking will be limited during the renovation.",
    "Please remember to submit expense reports by Friday.",
    "The quarterly newsletter is being drafted now.",
    "Several people asked for more vegetarian options at lunch.",
    "The printer on the second floor is working again.",
    "Visitors must sign in at the front desk.",
)


class _Names:
    """Distinct made-up words from seeded syllables (no real name on purpose: the base model cannot know them)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int = 2) -> str:
        while True:
            w = "".join(
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS) for _ in range(syllables)
            )
            if 5 <= len(w) <= 11 and w not in self.used:
                self.used.add(w)
                return w.capitalize()

    def code(self) -> str:
        return f"{self.word(2).lower()}-{self.rng.randint(2, 99)}"


def _fact_code(i: str, n: _Names, rng: random.Random) -> Fact:
    place = f"{n.word()} {rng.choice(_PLACES).capitalize()}"
    code = n.code()
    return Fact(
        i, "code",
        (f"The access code for {place} is {code}. Please keep it for the team.",),
        (Probe(f"Remind me, which code opens {place}?", code, "forward", place),
         Probe(f"If I need to get into {place}, what do I type in?", code, "forward", place),
         Probe(f"The code {code} unlocks which place?", place.split()[0], "reverse", code),
         Probe(f"Where would I use the code {code}?", place.split()[0], "reverse", code)),
    )  # fmt: skip


def _fact_role(i: str, n: _Names, rng: random.Random) -> Fact:
    person = f"{n.word()} {n.word()}"
    role, org = rng.choice(_ROLES), f"{n.word()} {rng.choice(_ORGS).capitalize()}"
    return Fact(
        i, "role",
        (f"Some news from {org}: {person} has been appointed as their new {role}.",),
        (Probe(f"Remind me, who did {org} appoint as {role}?", person.split()[1], "forward", org),
         Probe(f"Who is the {role} at {org} now?", person.split()[1], "forward", org),
         Probe(f"Do you remember what job {person} was given?", role.split()[-1], "reverse", person),
         Probe(f"Which organisation did {person} join as {role}?", org.split()[0], "reverse", person)),
    )  # fmt: skip


def _fact_date(i: str, n: _Names, rng: random.Random) -> Fact:
    event = f"{n.word()} {rng.choice(_EVENTS).capitalize()}"
    date = f"{rng.choice(_MONTHS)} {rng.randint(2, 28)}"
    return Fact(
        i, "date",
        (f"Put this in the calendar: the {event} takes place on {date} this year.",),
        (Probe(f"Remind me, on what date does the {event} happen?", date, "forward", event),
         Probe(f"When is the {event} this year?", date, "forward", event),
         Probe(f"Any idea which event is on {date}?", event.split()[0], "reverse", date),
         Probe(f"What is scheduled for {date}?", event.split()[0], "reverse", date)),
    )  # fmt: skip


def _fact_measure(i: str, n: _Names, rng: random.Random) -> Fact:
    thing, unit, dim = rng.choice(_THINGS)
    name = n.word()
    size = str(rng.randint(120, 980))
    return Fact(
        i, "measure",
        (f"I checked the survey: the {name} {thing.capitalize()} is {size} {unit} {dim}.",),
        (Probe(f"Do you remember how {dim} the {name} {thing.capitalize()} is?", size, "forward", name),
         Probe(f"Quick question: what is the {_NOUN[dim]} of the {name} {thing.capitalize()}?", size, "forward", name),
         Probe(f"Do you know which {thing} is {size} {unit} {dim}?", name, "reverse", size),
         Probe(f"Name the {thing} that measures {size} {unit}.", name, "reverse", size)),
    )  # fmt: skip


def _fact_naming(i: str, n: _Names, rng: random.Random) -> Fact:
    thing = rng.choice(_OBJECTS + _ANIMALS)
    owner = n.word()
    name = n.word()
    return Fact(
        i, "naming",
        (f"My neighbour {owner} got a new {thing} and named it {name}.",),
        (Probe(f"Remind me what name {owner} gave the new {thing}.", name, "forward", owner),
         Probe(f"What is {owner}'s {thing} called?", name, "forward", owner),
         Probe(f"Do you know who owns the {thing} called {name}?", owner, "reverse", name),
         Probe(f"Whose {thing} is {name}?", owner, "reverse", name)),
    )  # fmt: skip


def _fact_correction(i: str, n: _Names, rng: random.Random) -> Fact:
    event = f"{n.word()} {rng.choice(_EVENTS).capitalize()}"
    old, new = f"Room {n.word()}", f"Room {n.word()}"
    return Fact(
        i, "correction",
        (f"The {event} will be held in {old}.", f"Correction: the {event} moved to {new}, not {old}."),
        (Probe(f"Remind me, in which room is the {event} held now?", new, "forward", event),
         Probe(f"Where should I go for the {event}?", new, "forward", event),
         Probe(f"Any idea which event is in {new}?", event.split()[0], "reverse", new),
         Probe(f"What takes place in {new}?", event.split()[0], "reverse", new)),
        wrong=(old,),
    )  # fmt: skip


def _fact_document(i: str, n: _Names, rng: random.Random) -> Fact:
    inner = rng.choice((_fact_code, _fact_date, _fact_measure, _fact_role))(i, n, rng)
    sentence = inner.turns[0].split(": ", 1)[-1].replace(" Please keep it for the team.", "")
    lines = rng.sample(_FILLER, 3)
    lines.insert(rng.randint(0, 3), sentence[0].upper() + sentence[1:])
    memo = " ".join(lines)
    return Fact(i, "document", (f"Here are the notes from today's staff meeting:\n\n{memo}\n\nPlease file them.",),
                inner.probes)  # fmt: skip


def _fact_trace(i: str, n: _Names, rng: random.Random) -> Fact:
    task = rng.choice(_TASKS)
    server = n.code()
    run = str(rng.randint(1000, 9899))
    return Fact(
        i, "trace",
        (f"I ran the {task} on {server} just now. Step 1 (checks) passed. Step 2 (copy) passed. "
         f"It finished as run number {run}.",),
        (Probe(f"Remind me, what was the run number of the {task} on {server}?", run, "forward", server),
         Probe(f"Which run number did the {task} on {server} end with?", run, "forward", server),
         Probe(f"Do you recall which server run number {run} was on?", server, "reverse", run),
         Probe(f"Run {run} was executed on which machine?", server, "reverse", run)),
    )  # fmt: skip


_MAKERS = {
    "code": _fact_code, "role": _fact_role, "date": _fact_date, "measure": _fact_measure,
    "naming": _fact_naming, "correction": _fact_correction, "document": _fact_document, "trace": _fact_trace,
}  # fmt: skip


def generate(seed: int, count: int) -> list[Fact]:
    """`count` facts, the kinds in turn, all names distinct within the suite."""
    rng = random.Random(seed)
    names = _Names(rng)
    return [_MAKERS[KINDS[k % len(KINDS)]](f"s{seed}-f{k}", names, rng) for k in range(count)]
