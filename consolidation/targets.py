"""Training targets of a sleep: questions about each statement, in both directions, answered by the statement.

A target is (question, statement): the student, without the session, learns to answer the question with the
statement, matching the teacher (the current model with the session in context) token by token along it.
The answer is the user's own words (consolidation/statements.py), so nothing the teacher invents is taught;
the teacher supplies the distribution over each next token, and how much the session changes it.

Questions come two ways:
- **keyed**: for every span of a statement (a name, code, number, date), templates such as "What do you know
  about {span}?", answered by every statement of this sleep that states the span. Keying on each span asks
  in both directions: the name gives the code and the code gives the name (a model taught one direction
  does not answer the other: the reversal curse, Physics of LMs 3.2);
- **asked**: questions the teacher writes about the statement (few-shot, sampled): the phrasings a user
  would use ("What is the wifi password for the cabin?"), kept when they are about the statement (they share
  a span or two content words with it) and leave something to answer (not every span in the question).

Earlier sleeps' stored facts are replayed the same way (`sleep.stored_targets`); opt-in, `transfer_targets`
also asks them in this sleep's own wordings (a stored date put where the new question names its date).

Per answer token the teacher's top-k log-probabilities (with the session) and the *evidence* are computed
once: evidence = log p(token | session, question) - log p(token | question), how much the session supports
the token. Fact tokens carry it; the rest is left to replay (losses.distill_loss).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import zip_longest

import torch

from consolidation.policy import Policy
from consolidation.questions import answer_prompt, clean_question, statement_prompt
from consolidation.statements import Statement, span_pattern, span_shape, states_span

KEYED_TEMPLATES: tuple[str, ...] = (
    "What do you know about {}?",
    "Tell me about {}.",
    "What can you tell me about {}?",
    "What was said about {}?",
    "Do you remember anything about {}?",
    "Give me the details on {}.",
)
CLOZE_TEMPLATES: tuple[str, ...] = (
    "Fill in the blank: {}",
    "What is missing here? {}",
    "Complete the sentence: {}",
)
_STOP = frozenset(
    """a an the is are was were be been of in on at to for from by with and or but what which who whom whose when
    where why how does do did it its this that there their they you your my our me i we he she his her has have
    had can could would should will about into as than then so not no yes""".split()
)


@dataclass
class Target:
    """One question a statement (or several stating the same span) answers, in both views."""

    key: str  # what the target is about: the statement's text, or the span for keyed questions
    statements: tuple[Statement, ...]
    question: str
    kind: str  # "keyed", "asked", "cloze" or "transfer"
    student_prompt: list[int]
    teacher_prompt: list[int]
    answer: list[int]  # the statements' text + end of turn
    topk_ids: torch.Tensor | None = None  # (T, k) the teacher's most likely tokens at each answer position
    topk_logp: torch.Tensor | None = None  # (T, k) their log-probabilities (with the session in context)
    evidence: torch.Tensor | None = None  # (T,) log p(token | session) - log p(token | no session); None: weight 1
    weight: float = 1.0  # sampling weight (a decayed stored fact is drawn more often)
    span: str | None = None  # the span an answer-aware question was written to ask for
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def expected(self) -> tuple[str, ...]:
        """The spans a right answer states: the one the question was written to ask for, else the statements'
        specifics the question does not already hold. ("Which build finished as run number 3133?" asks for the
        build, not for every other number its statement holds.)"""
        if self.span and not states_span(self.question, self.span):
            return (self.span,)
        found = [s for st in self.statements for s in st.spans if not states_span(self.question, s)]
        return tuple(dict.fromkeys(found))

    @property
    def owner(self) -> str:
        return self.statements[0].session_id


def answer_text(statements: tuple[Statement, ...]) -> str:
    return " ".join(s.text for s in statements)


def teacher_context(statements: tuple[Statement, ...]) -> str:
    """What the teacher reads: the user's words the statements came from (the served model's replies are left
    out: they add nothing the model did not know, and at small sizes they are often wrong)."""
    return "\n".join(f"user: {src}" for src in dict.fromkeys(s.source for s in statements))


def make_target(policy: Policy, key: str, statements: tuple[Statement, ...], question: str, kind: str,
                span: str | None = None) -> Target:  # fmt: skip
    eos = policy.tokenizer.eos_token_id
    q = [{"role": "user", "content": question}]
    answer = list(policy.tokenizer(answer_text(statements), add_special_tokens=False)["input_ids"]) + [eos]
    return Target(
        key, statements, question, kind, policy.chat_ids(q), policy.chat_ids(q, context=teacher_context(statements)),
        answer, span=span,
    )  # fmt: skip


@dataclass(frozen=True)
class Asked:
    """A question the teacher wrote about a statement, and the span it was asked to have as its answer (None: a
    question about the statement as a whole)."""

    question: str
    span: str | None


def keyed_targets(
    policy: Policy, statements: list[Statement], per_span: int, rng: random.Random, max_statements: int = 3
) -> list[Target]:
    """`per_span` keyed questions for every span, answered by the statements (up to `max_statements`) that
    state it."""
    by_span: dict[str, list[Statement]] = {}
    label: dict[str, str] = {}
    for st in statements:
        for span in st.spans:
            by_span.setdefault(span.lower(), []).append(st)
            label.setdefault(span.lower(), span)
    out: list[Target] = []
    for key, group in by_span.items():
        chosen = tuple(dict.fromkeys(group))[:max_statements]
        for template in rng.sample(KEYED_TEMPLATES, min(per_span, len(KEYED_TEMPLATES))):
            out.append(make_target(policy, key, chosen, template.format(label[key]), "keyed"))
    return out


def cloze_targets(
    policy: Policy, statements: list[Statement], per_span: int, rng: random.Random, max_spans: int = 3
) -> list[Target]:
    """For each span of a statement, the statement with that span blanked out ("Fill in the blank: The ___ is
    964 metres long."), answered by the statement: the rest of the statement's words, the way a question in the
    other direction holds them ("Which tunnel is 964 metres long?"), lead to the span."""
    out: list[Target] = []
    for st in statements:
        for span in st.spans[:max_spans]:
            blanked = _blank(st.text, span)
            if blanked == st.text or len(_content(blanked)) < 2:
                continue
            for template in rng.sample(CLOZE_TEMPLATES, min(per_span, len(CLOZE_TEMPLATES))):
                out.append(make_target(policy, st.text, (st,), template.format(blanked), "cloze"))
    return out


def _blank(text: str, span: str) -> str:
    return span_pattern(span).sub("___", text, count=1)


def asked_questions(
    policy: Policy,
    statements: list[Statement],
    n: int,
    samples: int,
    temperature: float = 0.9,
    max_spans: int = 3,
    on_chunk: Callable[[int, int], None] | None = None,
) -> list[list[Asked]]:
    """Up to n distinct questions the teacher writes about each statement, in one batched sampling call: for
    each of its spans (up to `max_spans`), questions whose answer is that span (answer-aware: the code from the
    place and the place from the code), interleaved over spans; a statement without spans gets questions it
    answers. A question that already states its answer span is dropped."""
    if not statements or n <= 0:
        return [[] for _ in statements]
    prompts: list[list[int]] = []
    owners: list[tuple[int, str | None]] = []
    for i, st in enumerate(statements):
        for span in st.spans[:max_spans] or (None,):
            prompts.append(answer_prompt(policy, st.text, span) if span else statement_prompt(policy, st.text))
            owners.append((i, span))
    drawn = policy.generate(prompts, student=False, n=samples, temperature=temperature, max_new_tokens=32,
                            on_chunk=on_chunk)  # fmt: skip
    per_span: list[list[list[Asked]]] = [[] for _ in statements]
    for k, (i, span) in enumerate(owners):
        found: list[Asked] = []
        for ids in drawn[k * samples : (k + 1) * samples]:
            q = clean_question(policy.decode(ids), statements[i].text)
            if q and about(q, statements[i], exact=True) and not (span and states_span(q, span)):
                found.append(Asked(q, span))
        per_span[i].append(found)
    out: list[list[Asked]] = []
    for lists in per_span:
        merged: list[Asked] = []
        for a in (a for row in zip_longest(*lists) for a in row if a):
            if a.question.lower() not in {m.question.lower() for m in merged}:
                merged.append(a)
        out.append(merged[:n])
    return out


def about(question: str, statement: Statement, *, exact: bool = False) -> bool:
    """Is the question about this statement and still a question? It names one of its spans (with `exact`, only
    that counts: a 135M writer misspells made-up names, "Broudeck" for "Broudeack") or shares two content words
    with it, and does not already hold every span (then there is nothing left to answer)."""
    spans_in = [s for s in statement.spans if states_span(question, s)]
    if spans_in and len(spans_in) == len(statement.spans):
        return False
    if exact and statement.spans:
        return bool(spans_in)
    shared = _content(question) & _content(statement.text)
    return bool(spans_in) or len(shared) >= 2


def transfer_targets(policy: Policy, new: list[Target], stored: list[Statement], per_target: int) -> list[Target]:
    """Each new target's question asked again about confusable stored facts: where the question names a span of
    its statement, that span swapped for a stored statement's span of the same shape (a date for a date, a code
    or number for one, a name for a name), answered by the stored statement. Confusable: the two statements share
    a content word besides their spans ("takes place", "metres"). Up to `per_target` stored facts per span the
    question names, the most words shared first.

    Why: a new fact's training generalises to its own wordings. After seed 9's sleep 2 learned "The Gyckbral
    Regatta takes place on December 10", the model answered "Which event takes place on April 14?" with it, and
    replaying the stored Kroxhea Gala's own questions, as blanks too, did not hold that (docs/BENCHMARKS.md, "The
    reverse overwrite"). Here the new fact's wordings are trained, in the same steps, to lead from the older
    date to the older name."""
    out: list[Target] = []
    seen: set[str] = set()
    words = {st.text: _content(_strip_spans(st)) for st in stored}
    for t in new:
        own = t.statements[0]
        mine = _content(_strip_spans(own))
        near = sorted(
            ((len(mine & words[st.text]), st) for st in stored if st.text != own.text and mine & words[st.text]),
            key=lambda pair: -pair[0],
        )
        for span in own.spans:
            if not span_pattern(span).search(t.question):
                continue
            chosen = 0
            for _, st in near:
                if chosen >= per_target:
                    break
                other = next((o for o in st.spans if span_shape(o) == span_shape(span) and o.lower() != span.lower()),
                             None)  # fmt: skip
                if other is None:
                    continue
                question = span_pattern(span).sub(other.replace("\\", r"\\"), t.question, count=1)
                if question.lower() in seen:
                    continue
                seen.add(question.lower())
                moved = make_target(policy, st.text, (st,), question, "transfer")
                moved.extra["twin"] = t.question  # the new question it was made from (`SeedingConfig.transfer_twins`)
                out.append(moved)
                chosen += 1
    return out


def _strip_spans(st: Statement) -> str:
    text = st.text
    for span in st.spans:
        text = span_pattern(span).sub(" ", text)
    return text


def _content(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP and len(w) > 2}


def replay_targets(policy: Policy, prompts: list[str], max_new_tokens: int, top_k: int = 16) -> list[Target]:
    """Generic prompts answered by `policy`'s teacher view (the original base, or the previous version), with
    its top-k along its answers: replay matches them (forward KL, up to a constant) so generic behaviour stays
    that model's."""
    ids = [policy.chat_ids([{"role": "user", "content": p}]) for p in prompts]
    answers = policy.generate(ids, student=False, max_new_tokens=max_new_tokens)
    out = [Target(f"replay:{p}", (), p, "replay", i, i, a) for p, i, a in zip(prompts, ids, answers, strict=True) if a]
    attach_teacher(policy, out, top_k, evidence=False)
    return out


@torch.no_grad()
def attach_teacher(
    policy: Policy, targets: list[Target], top_k: int = 16, batch: int = 8, *, evidence: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> None:  # fmt: skip
    """Fill each target's teacher top-k and evidence, in batches (teacher with the session, and without).
    Without `evidence` every token weighs fully (replay: there is no session to weigh against)."""
    for start in range(0, len(targets), batch):
        chunk = targets[start : start + batch]
        answers = [t.answer for t in chunk]
        with_ctx, mask, toks = policy.completion_logits([t.teacher_prompt for t in chunk], answers, student=False)
        logp = torch.log_softmax(with_ctx.float(), -1)
        top = logp.topk(top_k, dim=-1)
        gain = None
        if evidence:
            without, _, _ = policy.completion_logits([t.student_prompt for t in chunk], answers, student=False)
            base = torch.log_softmax(without.float(), -1).gather(-1, toks.unsqueeze(-1)).squeeze(-1)
            gain = logp.gather(-1, toks.unsqueeze(-1)).squeeze(-1) - base
        for i, t in enumerate(chunk):
            n = len(t.answer)
            t.topk_ids, t.topk_logp = top.indices[i, :n].clone(), top.values[i, :n].clone()
            t.evidence = gain[i, :n].clone() if gain is not None else None
        if on_batch:
            on_batch(min(start + batch, len(targets)), len(targets))
