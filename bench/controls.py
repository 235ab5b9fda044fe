"""Does a right answer depend on what the question names? Each suite probe asked again with an untold cue.

A probe names a told value (its `cue`: the date in "Any idea which event is on April 14?", the event in "When
is the Kroxhea Gala this year?") and expects another. A model that has only learned that "which event ... on
<a date>?" is answered by the one event it knows answers the probe right without knowing the fact. Here every
probe is asked again with its cue replaced by an untold value of the same shape (another date, number, code,
made-up name); an answer that states the probe's expected value then was a guess, not recall. A probe counts
as *discriminated* when it is answered right and its control is not answered with the same value.

    .venv/bin/python -m bench.controls --seed 9 --sleeps 4 --group 1 --adapter /tmp/runs/ret-s9o/v0001
    .venv/bin/python -m bench.controls --seed 1 --adapter /tmp/runs/s1-candidate --draws 3 --in-context
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

import torch

from bench.learning import RESULTS, ROOT, ask, cached_sessions, wilson
from bench.suite import _EVENTS, _MONTHS, _ORGS, _PLACES, Fact, Probe, _Names, generate, is_correct, states
from consolidation.policy import Policy
from sleepd.models import resolve_model

_DATE = re.compile(r"(" + "|".join(_MONTHS) + r") (\d{1,2})")
_CODE = re.compile(r"[a-z]+-\d+")
_RUDE = re.compile(r"fuck|shit|cunt|dick|cock|piss|slut|wank")  # syllables drawn at random can spell these
# The generators' kind words, kept in a decoy name: "Kroxhea Gala" -> "Brisk Gala", "Room Veldo" -> "Room Tarn".
_KIND_WORDS = {w.capitalize() for w in (*_EVENTS, *_ORGS, *_PLACES)} | {"Room"}


def decoy(cue: str, names: _Names, rng: random.Random) -> str:
    """An untold value of `cue`'s shape: another date, a number of as many digits, a code, or a name with its
    made-up words replaced."""
    while True:
        if _DATE.fullmatch(cue):
            out = f"{rng.choice(_MONTHS)} {rng.randint(2, 28)}"
        elif cue.isdigit():
            out = str(rng.randint(10 ** (len(cue) - 1), 10 ** len(cue) - 1))
        elif _CODE.fullmatch(cue):
            out = names.code()
        else:
            out = " ".join(w if w in _KIND_WORDS else names.word() for w in cue.split())
        if out.lower() != cue.lower() and not _RUDE.search(out.lower()):
            return out


def controls(facts: list[Fact], seed: int, suite: list[Fact] | None = None, draw: int = 0
             ) -> list[tuple[Fact, Probe, str]]:  # fmt: skip
    """Each probe of `facts` with its control question: the cue replaced by a decoy that no fact of `suite` (the
    whole run's facts; default `facts`) tells, so a later sleep's value is never asked as untold. `draw` picks
    another set of decoys (draw 0 is the one every recorded run asked)."""
    rng = random.Random(f"controls-{seed}" if draw == 0 else f"controls-{seed}-draw{draw}")
    names = _Names(rng)
    told = " ".join(" ".join(f.turns) for f in suite or facts).lower()
    out = []
    for f in facts:
        for p in f.probes:
            if not p.cue or p.cue not in p.question:
                raise ValueError(f"probe without its cue: {p}")
            d = decoy(p.cue, names, rng)
            while d.lower() in told:
                d = decoy(p.cue, names, rng)
            out.append((f, p, p.question.replace(p.cue, d, 1)))
    return out


def score_controls(answers: list[str], decoys: list[str] | list[list[str]], items: list[tuple[Fact, Probe, str]]
                   ) -> dict[str, Any]:  # fmt: skip
    """Right answers, controls answered with the expected value anyway (guessed), and right answers whose control
    was not (discriminated), overall and by direction, with Wilson 95% intervals. `decoys` may hold several
    draws' control answers per probe: a probe is guessed when any draw states its value."""
    right = [is_correct(a, p, f.wrong) for a, (f, p, _) in zip(answers, items, strict=True)]
    per_probe = [[d] if isinstance(d, str) else d for d in decoys]
    guessed = [any(states(d, p.expected) for d in ds) for ds, (_, p, _) in zip(per_probe, items, strict=True)]

    def part(keep: list[bool]) -> dict[str, Any]:
        n = sum(keep)
        row: dict[str, Any] = {"n": n}
        for name, hits in (("right", right), ("guessed", guessed),
                           ("discriminated", [r and not g for r, g in zip(right, guessed, strict=True)])):  # fmt: skip
            k = sum(h for h, m in zip(hits, keep, strict=True) if m)
            row[name] = {"correct": k, "rate": round(k / max(n, 1), 3), "ci95": wilson(k, n)}
        return row

    out: dict[str, Any] = {"all": part([True] * len(items))}
    for d in ("forward", "reverse"):
        out[d] = part([p.direction == d for _, p, _ in items])
    out["hits"] = [r and not g for r, g in zip(right, guessed, strict=True)]  # discriminated, per probe
    return out


def control_row(
    served: Policy, adapter: str | None, facts: list[Fact], seed: int, max_new_tokens: int,
    answers: list[str] | None = None, trained: list[str] | tuple[str, ...] = (), suite: list[Fact] | None = None,
    context: dict[str, list[dict[str, str]]] | None = None, draws: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """`facts`' probes and their controls asked of `adapter` (`answers`: the probes' answers, if already asked),
    scored; `trained_controls` counts control questions the sleep trained on (its untold-value questions may
    draw the same value: such a control does not test a guess). With `context` (a fact's id -> its session),
    both are asked as the session's next turn: the in-context bar, which a model reading one gala's date may
    also give for any gala. With `draws` > 1 each probe gets that many controls (other untold cues), and a probe
    is guessed when any of them states its value: one draw can miss a guess by luck."""
    drawn = [controls(facts, seed, suite, d) for d in range(draws)]
    items = drawn[0]
    prefixes = [context[f.id] if context else [] for f, _, _ in items]

    def asked(questions: list[str]) -> list[str]:
        prompts = [served.chat_ids([*pre, {"role": "user", "content": q}]) for pre, q in zip(prefixes, questions,
                                                                                            strict=True)]  # fmt: skip
        return ask(served, adapter, prompts, max_new_tokens)

    answers = asked([p.question for _, p, _ in items]) if answers is None else answers
    by_draw = [asked([q for _, _, q in its]) for its in drawn]
    decoys = [list(ds) for ds in zip(*by_draw, strict=True)]
    seen = {q.lower() for q in trained}
    return {
        **score_controls(answers, decoys, items),
        "draws": draws,
        "trained_controls": sum(q.lower() in seen for its in drawn for _, _, q in its),
        "rows": [
            {"question": p.question, "expected": p.expected, "answer": a,
             "controls": [its[i][2] for its in drawn], "control_answers": ds}
            for i, ((_, p, _), a, ds) in enumerate(zip(items, answers, decoys, strict=True))
        ],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sleeps", type=int, default=1, help="the run's --sleeps (its facts are made together)")
    ap.add_argument("--facts-per-sleep", type=int, default=16)
    ap.add_argument("--group", type=int, action="append", help="which sleeps' facts (1-based; default: all)")
    ap.add_argument("--adapter", type=Path, action="append", required=True, help="an adapter folder (repeatable)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--draws", type=int, default=1, help="controls per probe (guessed: any of them states its value)")
    ap.add_argument("--in-context", action="store_true", help="also the base with each fact's session in context")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "controls.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.facts_per_sleep
    facts = generate(args.seed, args.sleeps * n)
    groups = args.group or list(range(1, args.sleeps + 1))
    chosen = [f for g in groups for f in facts[(g - 1) * n : g * n]]
    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    adapters = {p.name: p for p in args.adapter}
    served = Policy.serving(base, adapters)
    runs: list[tuple[str, str | None, dict[str, list[dict[str, str]]] | None]] = [
        ("base", None, None),
        *((name, name, None) for name in adapters),
    ]
    if args.in_context:  # the sessions bench.learning tells (cached under bench/results)
        convs = cached_sessions(base, facts, args.seed)
        runs.append(("in context", None, {f.id: c for f, c in zip(facts, convs, strict=True)}))
    result: dict[str, Any] = {"config": vars(args), "models": {}}
    for label, name, context in runs:
        result["models"][label] = control_row(served, name, chosen, args.seed, args.max_new_tokens, suite=facts,
                                              context=context, draws=args.draws)  # fmt: skip
        row = result["models"][label]["all"]
        print(f"{label}: right {row['right']['correct']}/{row['n']}, guessed {row['guessed']['correct']}, "
              f"discriminated {row['discriminated']['correct']}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
