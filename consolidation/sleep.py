"""One sleep cycle as a library call: sessions -> statements -> Knowledge Seeding -> Dreaming -> gate -> adapter.

`run_sleep` reads logged exchanges, turns what the users told into self-contained statements, trains a new
low-rank expert on top of the active adapter, builds the adapter that would be published (every earlier expert
plus the new one, rank-concatenated, compacted to the engine's cap), evaluates *that* adapter with the gate,
and writes it into the registry only if the gate passes, with the lineage's fact store. Pointing servers at it
(Redis) is the caller's job: the CLI and the worker do it. No FastAPI, Celery or Redis here.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from consolidation import factstore
from consolidation.anchors import ANCHOR_PROMPTS, MONITOR_PROMPTS, REPLAY_PROMPTS
from consolidation.dreaming import DreamingConfig, dream
from consolidation.drift import DriftBudget, DriftGuard
from consolidation.experts import compact, load_adapter, save_adapter, stack
from consolidation.gate import GateConfig, GateReport, closed_book_answers, evaluate
from consolidation.interference import InterferenceWatch, WatchConfig
from consolidation.nullspace import NullSpaceConfig, generic_projector
from consolidation.policy import ExpertConfig, Policy, Precision
from consolidation.seeding import SeedingConfig, seed_knowledge, verifier_score
from consolidation.sessions import Memory, memories
from consolidation.statements import Statement, statements
from consolidation.targets import (
    KEYED_TEMPLATES,
    Asked,
    Target,
    asked_questions,
    attach_teacher,
    cloze_targets,
    keyed_targets,
    make_target,
    replay_targets,
    transfer_targets,
)
from sleepd.records import ExchangeRecord
from sleepd.registry import BASE, AdapterMeta, AdapterRegistry, Expert, base_model_fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SleepConfig:
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    seeding: SeedingConfig = field(default_factory=SeedingConfig)
    dreaming: DreamingConfig = field(default_factory=DreamingConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    keyed_per_span: int = 3  # "What do you know about {span}?"-style questions per span
    cloze_per_span: int = 1  # "Fill in the blank: The ___ is 964 metres long." per span
    asked_per_statement: int = 4  # questions the teacher writes per statement (train + held out)
    asked_samples: int = 6  # sampled to find them
    heldout_per_statement: int = 1  # of those, held out as the gate's probes (when a statement has two or more)
    # A small sleep's gate judges recall on too few probes (4 facts gave 2-4; one greedy answer decided sleep 2 of
    # both retention seeds): below this many, questions the teacher wrote beyond `asked_per_statement` are held
    # out too. Training keeps the same questions either way.
    min_probes: int = 8
    # Below `min_probes` even with the spares, the teacher samples this many more questions per span for the
    # statements short of questions (0: never). Seed 6's first sleep had one probe (the writer's 6 samples found
    # 1, 1, 3 and 0 usable questions for its 4 statements; 12 more found 6, 3, 5, 1) and was refused 0 -> 0 on
    # it while the suite's probes read 8/16.
    asked_retry_samples: int = 12
    # Store with each new fact which of its questions the teacher answers right with the fact in context; later
    # gates' retention checks ask only those. Of the 38 retention probes of seed 7's third version the teacher
    # answered 16, and one sleep was refused for "losing" two it never could have (docs/BENCHMARKS.md, "Retention").
    vet_probes: bool = True
    stored_replay: int = 64  # earlier sleeps' facts replayed per sleep (the ones the model lost first)
    # How often a stored fact the model still recalls is drawn (a lost one: 1). The ones it still recalls are the
    # ones a same-kind sleep overwrites, so they are rehearsed as much (0.3 lost more: docs/BENCHMARKS.md).
    stored_known_weight: float = 1.0
    # Stored facts asked in this sleep's own wordings, per new question (`targets.transfer_targets`; 0: off).
    stored_transfer: int = 0
    store_cap: int = 5000  # facts carried in an adapter's lineage
    top_k: int = 16  # teacher log-probabilities kept per answer token
    max_rank: int = 64  # the serving engine's max LoRA rank: compact past it
    anchors: tuple[str, ...] = ANCHOR_PROMPTS  # drift is measured here (never trained on)
    replay: tuple[str, ...] = REPLAY_PROMPTS  # rehearsed during training
    # Whose answers the replay matches in a later sleep: "base" (the original base) pulls generic answers back
    # towards it; "previous" (the version the sleep builds on) kept that version's drift, each stacked expert
    # added ~0.04 against the base, and seed 3's fifth sleep was refused at 0.206 (0.106 from the base:
    # docs/BENCHMARKS.md, "Retention over sequential sleeps").
    replay_from: Literal["base", "previous"] = "base"
    monitor: tuple[str, ...] = MONITOR_PROMPTS  # drift watched during training (the drift budget)
    # None (the default): train the whole budget. A DriftBudget cost recall on the report seed (its strict
    # undo of a Dreaming round removed Dreaming's gain): docs/BENCHMARKS.md, "Drift control".
    drift: DriftBudget | None = None
    # The expert may not read the replay's leading input directions (None: any). On the tuning seed it cut
    # anchor KL 0.090 -> 0.053 for 19 -> 16 of 32 probes (docs/BENCHMARKS.md, "Where the update goes"; why its
    # energy is 0.9: `NullSpaceConfig.energy`).
    nullspace: NullSpaceConfig | None = field(default_factory=NullSpaceConfig)
    # Earlier facts whose loss rises while this sleep trains are drawn more often (None: a random share only).
    watch: WatchConfig | None = field(default_factory=WatchConfig)
    threads: int | None = None
    # "auto": train and sample in bf16 with fp32 trainable weights where the CPU has bf16 instructions; "fp32"
    # (the default): never. The gate judges in fp32 either way, as vLLM serves (`consolidation.policy`). Mixed
    # precision made the sleep 0.60-0.86x (SQuAD's 1,405 s per 1k) but the report seed read 20/64 against fp32's
    # 26/64 and seed 8 20/64 against 28/64: not the default until that is understood (docs/BENCHMARKS.md).
    precision: Precision = "fp32"
    seed: int = 0
    tenant: str = "default"  # whose lineage the published version joins (registry metadata)
    keep_candidate: Path | None = None  # save the candidate adapter here even when the gate rejects it (benchmarks)


@dataclass
class SleepReport:
    published: AdapterMeta | None
    gate: GateReport | None
    parent: str
    sessions: int
    statements: int
    targets: int
    timings_s: dict[str, float]
    tokens: dict[str, int]
    session_tokens: int = 0
    seeding_last: dict[str, float] = field(default_factory=dict)
    dreaming: list[dict[str, Any]] = field(default_factory=list)
    compaction_error: float = 0.0
    stored_facts: int = 0
    retired_facts: int = 0
    trained_questions: list[str] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per phase: the cost when others share the CPU
    drift_checks: list[dict[str, Any]] = field(default_factory=list)  # the drift budget's measurements

    @property
    def nothing_to_learn(self) -> bool:
        return self.gate is None

    def summary(self) -> dict[str, Any]:
        gate = (
            {
                "passed": self.gate.passed,
                "reasons": self.gate.reasons,
                "limits": self.gate.limits,
                **self.gate.metrics(),
            }
            if self.gate
            else {"passed": False, "reasons": ["nothing to learn: no session stated a name, number or date"]}
        )
        return {
            "published": self.published.version if self.published else None,
            "parent": self.parent,
            "gate": gate,
            "sessions": self.sessions,
            "statements": self.statements,
            "targets": self.targets,
            "timings_s": self.timings_s,
            "tokens_per_s": {k: self.tokens[k] / max(self.timings_s.get(k, 0), 1e-9) for k in self.tokens},
            "session_tokens": self.session_tokens,
            # Cost of a sleep in proportion to what it consolidates: seconds per 1k session tokens, per phase.
            "s_per_1k_session_tokens": {
                k: round(1000 * v / max(self.session_tokens, 1), 1) for k, v in self.timings_s.items()
            },
            "cpu_s": {k: round(v, 1) for k, v in self.cpu_s.items()},
            "cpu_s_per_1k_session_tokens": {
                k: round(1000 * v / max(self.session_tokens, 1), 1) for k, v in self.cpu_s.items()
            },
            "seeding_last": self.seeding_last,
            "dreaming": self.dreaming,
            "compaction_error": self.compaction_error,
            "stored_facts": self.stored_facts,
            "retired_facts": self.retired_facts,
            "drift_checks": self.drift_checks,
            "probes": self.gate.examples if self.gate else [],  # held-out questions, answers before and after
            "earlier": self.gate.earlier if self.gate else [],  # earlier facts' probes: previous vs candidate
        }


Progress = Callable[[str, float, dict[str, Any]], None]  # phase, fraction done, details


class Clock:
    """Wall and CPU seconds per phase. CPU seconds (this process, all its threads) are what a sleep costs when
    other work shares the machine; wall seconds are what an operator waits."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._at = (time.perf_counter(), time.process_time())

    def lap(self, phase: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.wall[phase] = now[0] - self._at[0]
        self.cpu[phase] = now[1] - self._at[1]
        self._at = now


@dataclass
class Prepared:
    statements: list[Statement]
    targets: list[Target]  # new knowledge, trained on
    probes: list[Target]  # held-out questions about it, the gate's
    stored: list[Target]  # earlier sleeps' facts, replayed
    checks: list[Target]  # probes of sampled earlier facts: the gate's retention check
    recalled: list[bool]  # for each check, whether the version that stored its fact answered it right
    questions: dict[str, list[str]]  # statement text -> the questions trained on it (for the fact store)
    heldout: dict[str, list[tuple[str, str | None]]]  # statement text -> its held-out probes (for the fact store)
    answerable: dict[str, tuple[str, ...]] | None = None  # statement text -> questions answered in context


def run_sleep(
    base_model: Path,
    records: list[ExchangeRecord],
    registry: AdapterRegistry,
    active: str,
    cfg: SleepConfig,
    progress: Progress | None = None,
) -> SleepReport:
    def report(phase: str, done: float, **details: Any) -> None:
        if progress:
            progress(phase, done, details)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mems = memories(records)
    if not mems:
        raise ValueError("no usable sessions to consolidate")
    previous = registry.path(active) if active != BASE else None
    parent_meta = registry.get(active) if previous else None
    with tempfile.TemporaryDirectory(prefix="sleepd-sleep-") as tmp:
        return _run(base_model, mems, registry, active, previous, parent_meta, cfg, Path(tmp), report)


def _run(
    base_model: Path, mems: list[Memory], registry: AdapterRegistry, active: str, previous: Path | None,
    parent_meta: AdapterMeta | None, cfg: SleepConfig, work: Path, report: Callable[..., None],
) -> SleepReport:  # fmt: skip
    clock = Clock()
    tokens: dict[str, int] = {}
    sessions = len({m.session_id.split("#")[0] for m in mems})
    report("prepare", 0.0, step="load")
    # Room for the new expert under the engine's rank cap is made *before* training: the student then learns on
    # top of the compacted previous adapter, and replaying the stored facts re-teaches what compaction lost.
    start, compaction_error = make_room(previous, work / "previous", cfg.max_rank - cfg.expert.rank)
    # The original base answers the replay before the training copy loads: never two models in memory at once.
    replay = base_replay(base_model, cfg) if previous is not None and cfg.replay_from == "base" else None
    policy = Policy(base_model, start, cfg.expert, seed=cfg.seed, precision=cfg.precision)
    session_tokens = sum(len(policy.tokenizer(m.render())["input_ids"]) for m in mems)
    found = [s for m in mems for s in statements(m)]
    stored_all = factstore.load(parent_meta.lineage) if parent_meta else []
    kept, retired = factstore.retire(stored_all, found)
    if not found:
        report("done", 1.0, passed=False)
        clock.lap("prepare")
        return SleepReport(None, None, active, sessions, 0, 0, clock.wall, tokens, session_tokens,
                           stored_facts=len(stored_all), cpu_s=clock.cpu)  # fmt: skip
    prep = prepare(policy, found, kept, cfg, lambda done, step: report("prepare", done, step=step))
    report("prepare", 0.95, step="replay")
    if replay is None:
        replay = replay_targets(policy, list(cfg.replay), cfg.seeding.max_new_tokens, cfg.top_k)
    guard = None
    if cfg.drift:  # off by default: no monitor answers to sample, no parameter snapshots
        monitor = replay_targets(policy, list(cfg.monitor), cfg.seeding.max_new_tokens, cfg.top_k)
        guard = DriftGuard(policy, monitor, cfg.drift)
    hooks = training_hooks(policy, replay, cfg, stored=prep.stored)
    before = closed_book_answers(policy, prep.probes, student=False, max_new_tokens=cfg.gate.max_new_tokens)
    clock.lap("prepare")

    steps = seed_knowledge(
        policy, prep.targets, prep.stored, replay, cfg.seeding,
        on_step=lambda s: report("seeding", s.step / s.steps, loss=s.loss, distill=s.distill, replay=s.replay),
        guard=guard, **hooks,
    )  # fmt: skip
    clock.lap("seeding")
    tokens["seeding"] = sum(s.tokens for s in steps)

    rounds = dream(
        policy, prep.targets, replay, cfg.dreaming, cfg.seeding,
        on_round=lambda r: report("dreaming", r.round / max(cfg.dreaming.rounds, 1), pass_rate=r.pass_rate),
        guard=guard, stored=prep.stored, **hooks,
    )  # fmt: skip
    clock.lap("dreaming")

    # The gate evaluates the very files that would be published.
    report("gate", 0.0, step="package")
    candidate = package(policy, start, work)
    del policy  # the gate loads the served form; free the training copy first
    if cfg.keep_candidate:
        shutil.copytree(candidate, cfg.keep_candidate, dirs_exist_ok=True)
    report("gate", 0.2, step="evaluate")
    served = Policy.serving(base_model, {"candidate": candidate, **({"previous": previous} if previous else {})})
    gate = evaluate(served, prep.probes, list(cfg.anchors), cfg.gate, previous="previous" if previous else None,
                    before_answers=before, heldout=bool(prep.probes), stored=prep.checks,
                    recalled=prep.recalled)  # fmt: skip
    facts: list[factstore.StoredFact] = []
    if gate.passed:
        facts = factstore.merge(kept, prep.statements, prep.questions, cfg.store_cap, prep.heldout, prep.answerable)
        facts = record_recall(served, facts, {st.text for st in prep.statements}, cfg.gate, gate.examples)
    del served
    clock.lap("gate")
    published = None
    if gate.passed:
        earlier = parent_meta.experts if parent_meta else []
        if start is not previous and start is not None:  # compacted: the earlier experts are one now
            earlier = [Expert(rank=cfg.max_rank - cfg.expert.rank, source=f"compacted {active}")]
        published = registry.publish(
            candidate,
            base_model=base_model_fingerprint(base_model),
            parent=None if active == BASE else active,
            experts=[*earlier, Expert(rank=cfg.expert.rank, source="sleep")],
            lineage={
                "sessions": sorted({m.session_id.split("#")[0] for m in mems}),
                "records": sorted({r for m in mems for r in m.record_ids}),
                "facts": [f.to_json() for f in facts],
            },
            gate=gate.metrics() | {"compaction_error": compaction_error},
            tenant=cfg.tenant,
        )
        clock.lap("publish")
    report("done", 1.0, passed=gate.passed)
    trained = [t.question for t in [*prep.targets, *prep.stored]] + [q for r in rounds for q in r.questions]
    return SleepReport(
        published, gate, active, sessions, len(prep.statements), len(prep.targets), clock.wall, tokens,
        session_tokens, asdict(steps[-1]) if steps else {}, [asdict(r) for r in rounds], compaction_error,
        len(stored_all), len(retired), list(dict.fromkeys(trained)), clock.cpu,
        [asdict(c) for c in guard.log] if guard else [],
    )  # fmt: skip


def base_replay(base_model: Path, cfg: SleepConfig) -> list[Target]:
    """The replay targets as the original base answers them (`replay_from` "base", a sleep with a previous
    version): matching them pulls generic answers back towards the base instead of keeping the previous
    version's drift."""
    policy = Policy(base_model, None, cfg.expert, seed=cfg.seed, precision=cfg.precision)
    return replay_targets(policy, list(cfg.replay), cfg.seeding.max_new_tokens, cfg.top_k)


def training_hooks(
    policy: Policy, replay: list[Target], cfg: SleepConfig, stored: list[Target] | None = None
) -> dict[str, Any]:
    """What Seeding and Dreaming both take: one AdamW over the expert when Dreaming carries Seeding's moments
    (else each phase makes its own), and the null-space projection after every step (when on). The projection
    keeps the expert off the replay's inputs and, with `protect_stored`, off earlier sleeps' stored facts too:
    without that, facts of the same kind overwrote them ("the Ciolbeark Tower is 395 metres", the newer
    tower's height; docs/BENCHMARKS.md, "Retention over sequential sleeps")."""
    opt = None
    if cfg.dreaming.carry_optimizer:
        opt = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.seeding.lr, weight_decay=0.0)
    after: list[Callable[[], None]] = []
    if cfg.nullspace:
        protected = stored if cfg.nullspace.protect_stored else None
        after.append(generic_projector(policy, replay, cfg.nullspace, protected).apply)
    if cfg.watch and stored:
        after.append(InterferenceWatch(policy, stored, cfg.watch).tick)  # measures the projected update

    def after_step() -> None:
        for hook in after:
            hook()

    return {"opt": opt, "after_step": after_step if after else None}


def prepare(
    policy: Policy, found: list[Statement], kept: list[factstore.StoredFact], cfg: SleepConfig,
    on_progress: Callable[[float, str], None],
) -> Prepared:  # fmt: skip
    """Questions and teacher distributions for the new statements, probes held out, earlier facts to replay."""
    rng = random.Random(cfg.seed)
    on_progress(0.05, "questions")
    # Two spares per statement asked too: the first `asked_per_statement` are the same questions either way.
    n = cfg.asked_per_statement
    drawn = asked_questions(
        policy, found, n + 2, cfg.asked_samples,
        on_chunk=lambda done, total: on_progress(0.05 + 0.2 * done / total, "questions"),
    )  # fmt: skip
    if probe_count(drawn, n, cfg.heldout_per_statement) < cfg.min_probes and cfg.asked_retry_samples > 0:
        on_progress(0.2, "questions (more)")
        drawn = top_up(drawn, n + 2, lambda short: asked_questions(policy, [found[i] for i in short], n + 2,
                                                                   cfg.asked_retry_samples))  # fmt: skip
    asked = [qs[:n] for qs in drawn]
    held_out = [cfg.heldout_per_statement if len(qs) >= 2 else 0 for qs in asked]
    spares = spare_probes([qs[n:] for qs in drawn], cfg.min_probes - sum(held_out))
    targets: list[Target] = keyed_targets(policy, found, cfg.keyed_per_span, rng)
    targets += cloze_targets(policy, found, cfg.cloze_per_span, rng)
    probes: list[Target] = []
    questions: dict[str, list[str]] = {}
    heldout: dict[str, list[tuple[str, str | None]]] = {}
    for st, qs, held, spare, extra in zip(found, asked, held_out, spares, [d[n:] for d in drawn], strict=True):
        # Only the gate's probes expect the one span they were written for. Training keeps the statement's
        # spans (Dreaming's acceptance, the on-policy verifier): judged by the asked span, more attempts pass,
        # and the report seed's sleep drifted past the gate (anchor KL 0.092 -> 0.108, docs/BENCHMARKS.md).
        probes += [make_target(policy, st.text, (st,), a.question, "asked", a.span) for a in qs[:held]]
        targets += [make_target(policy, st.text, (st,), a.question, "asked") for a in qs[held:]]
        questions[st.text] = [a.question for a in qs[held:]]
        probes += [make_target(policy, st.text, (st,), a.question, "asked", a.span) for a in spare]
        # The store keeps every spare, used by this gate or not: never trained on, they are later sleeps' retention
        # probes. With only the spares this gate used (often one per fact), seed 4's check kept 6 of 6 while sleep
        # 1's suite probes fell 8 -> 5 (docs/BENCHMARKS.md). This sleep's training and gate are unchanged.
        heldout[st.text] = [(a.question, a.span) for a in [*qs[:held], *extra]]
    vetted = None
    if cfg.vet_probes:
        on_progress(0.28, "vetting probes")
        vetted = answerable(policy, found, questions, heldout, cfg.gate)
    on_progress(0.3, "stored facts")
    probe = stored_probes(policy, kept)
    stored = stored_targets(policy, kept, probe, cfg, rng)
    if cfg.stored_transfer > 0 and kept:
        never = {q.lower() for f in kept for q, _ in f.probes}  # held out: never trained on, in any sleep
        moved = transfer_targets(policy, targets, [f.statement() for f in kept], cfg.stored_transfer)
        stored += [t for t in moved if t.question.lower() not in never]
    # Its own generator: the sample must not shift the training targets' draws.
    sample = random.Random(cfg.seed).sample(range(len(kept)), min(cfg.gate.stored_sample, len(kept)))
    checks: list[Target] = []
    recalled: list[bool] = []
    for i in sample:
        asked_now = retention_probes(policy, kept[i], probe[i])
        checks += asked_now
        recalled += [t.question in (kept[i].recalled or ()) for t in asked_now]
    on_progress(0.4, "teacher")
    attach_teacher(policy, [*targets, *stored], cfg.top_k,
                   on_batch=lambda done, total: on_progress(0.4 + 0.5 * done / total, "teacher"))  # fmt: skip
    return Prepared(found, targets, probes, stored, checks, recalled, questions, heldout, vetted)


def answerable(
    policy: Policy, found: list[Statement], questions: dict[str, list[str]],
    heldout: dict[str, list[tuple[str, str | None]]], cfg: GateConfig,
) -> dict[str, tuple[str, ...]]:  # fmt: skip
    """For each statement, the questions about it (trained on, and held out) that the teacher answers right with
    the statement's source in context (greedy, scored as the gate scores). A question the model cannot answer
    with the fact given does not test whether it kept the fact: the writer asked "What head chef will Krydrouth
    Gainsea be appointed to?" of notes that end "by Friday", and a closed-book reply reciting the notes counted
    as the fact recalled. Greedy: no draw, so the sleep's training is the same with or without it."""
    asked = [(st, make_target(policy, st.text, (st,), q, "asked", span))
             for st in found for q, span in [*((q, None) for q in questions.get(st.text, ())),
                                             *heldout.get(st.text, ())]]  # fmt: skip
    out: dict[str, tuple[str, ...]] = {st.text: () for st in found}
    if not asked:
        return out
    answers = policy.generate([t.teacher_prompt for _, t in asked], student=False, max_new_tokens=cfg.max_new_tokens)
    for (st, t), ids in zip(asked, answers, strict=True):
        if t.expected and verifier_score(policy.decode(ids), t) >= cfg.match:
            out[st.text] += (t.question,)
    return out


def record_recall(served: Policy, facts: list[factstore.StoredFact], new: set[str], cfg: GateConfig,
                  asked: list[dict[str, Any]]) -> list[factstore.StoredFact]:  # fmt: skip
    """`facts` with each new one's `recalled` set: which of its retention probes the candidate ("candidate" in
    `served`, the version that will store it) answers right closed-book. Probes the gate already asked
    (`asked`: its example rows) are not asked again."""
    done = {(row["question"], tuple(row["expected"])): bool(row["after_ok"]) for row in asked}
    fresh = [i for i, f in enumerate(facts) if f.text in new]
    probes = {i: retention_probes(served, facts[i], stored_probes(served, [facts[i]])[0]) for i in fresh}
    todo = [t for i in fresh for t in probes[i] if (t.question, t.expected) not in done]
    with served.using("candidate"):
        answers = closed_book_answers(served, todo, student=True, max_new_tokens=cfg.max_new_tokens)
    done |= {(t.question, t.expected): verifier_score(a, t) >= cfg.match for t, a in zip(todo, answers, strict=True)}
    out = list(facts)
    for i in fresh:
        right = tuple(t.question for t in probes[i] if done[(t.question, t.expected)])
        out[i] = replace(facts[i], recalled=right)
    return out


def stored_probes(policy: Policy, kept: list[factstore.StoredFact]) -> list[Target | None]:
    """One closed-book question per stored fact: the first it was trained on that the teacher answered in context
    when it was stored (any, for a fact not checked), else a keyed one on its first span.
    None for a fact with neither (a statement without names or numbers the teacher wrote no usable question
    about): nothing to ask it by, and nothing to replay. A SQuAD sleep's gate passed and then storing such a
    sentence raised IndexError, so the cycle failed and nothing was published."""
    out: list[Target | None] = []
    for f in kept:
        usable = [q for q in f.questions if f.asks(q)]
        q = usable[0] if usable else KEYED_TEMPLATES[0].format(f.spans[0]) if f.spans else None
        out.append(make_target(policy, f.text, (f.statement(),), q, "asked") if q else None)
    return out


def probe_count(drawn: list[list[Asked]], n: int, held: int) -> int:
    """Held-out probes `prepare` can have from these questions: `held` per statement with two or more of its
    first `n`, and every spare beyond them."""
    return sum(held if len(qs[:n]) >= 2 else 0 for qs in drawn) + sum(len(qs[n:]) for qs in drawn)


def top_up(drawn: list[list[Asked]], want: int, ask: Callable[[list[int]], list[list[Asked]]]) -> list[list[Asked]]:
    """`drawn` with more questions, from `ask` (the statements' indices -> their new questions), for the
    statements with fewer than `want`: new distinct ones appended after the first draw's, up to `want`."""
    short = [i for i, qs in enumerate(drawn) if len(qs) < want]
    out = [list(qs) for qs in drawn]
    for i, more in zip(short, ask(short) if short else [], strict=True):
        for a in more:
            if len(out[i]) < want and a.question.lower() not in {b.question.lower() for b in out[i]}:
                out[i].append(a)
    return out


def spare_probes(spares: list[list[Asked]], wanted: int) -> list[list[Asked]]:
    """Up to `wanted` of the spare questions, taken one statement at a time in turn (so each statement's
    first spare comes before any statement's second)."""
    out: list[list[Asked]] = [[] for _ in spares]
    for depth in range(max((len(s) for s in spares), default=0)):
        for i, s in enumerate(spares):
            if wanted > 0 and depth < len(s):
                out[i].append(s[depth])
                wanted -= 1
    return out


def retention_probes(policy: Policy, fact: factstore.StoredFact, trained: Target | None) -> list[Target]:
    """What the gate asks about an earlier fact: its held-out probes (never trained on, in any sleep) and one
    question it was trained on. The trained question alone passed a sleep that cost sleep 1's paraphrased probes
    9 -> 6 of 16 while it kept 3 of 3 (docs/BENCHMARKS.md, "Retention over sequential sleeps")."""
    st = fact.statement()
    probes = [make_target(policy, fact.text, (st,), q, "asked", span) for q, span in fact.probes
              if strict(span) and fact.asks(q)]  # fmt: skip
    return [*probes, *([trained] if trained else [])]


def strict(span: str | None) -> bool:
    """Whether a probe's expected span can be scored strictly. A lone digit cannot: any answer that numbers
    steps states it ("Which run number is 4070?", expecting a task trace's "2", passed on "Step 2 (copy)
    passed" and failed on "The run number is 4070"), so it cannot tell a kept fact from a lost one."""
    return span is None or not (len(span) == 1 and span.isdigit())


def stored_targets(policy: Policy, kept: list[factstore.StoredFact], probe: list[Target | None], cfg: SleepConfig,
                   rng: random.Random) -> list[Target]:  # fmt: skip
    """Targets replaying up to `stored_replay` earlier facts: the current model answers each fact's `probe`
    closed-book first; facts it lost are chosen first (and weigh more if `stored_known_weight` < 1). A fact
    without a probe has no question and no span to replay it by, and is skipped."""
    if not kept or cfg.stored_replay <= 0:
        return []
    asked = [(i, p) for i, p in enumerate(probe) if p is not None]
    answers = closed_book_answers(policy, [p for _, p in asked], student=False, max_new_tokens=cfg.gate.max_new_tokens)
    lost = {i: verifier_score(a, p) < cfg.gate.match for (i, p), a in zip(asked, answers, strict=True)}
    order = sorted(lost, key=lambda i: (not lost[i], rng.random()))[: cfg.stored_replay]
    out: list[Target] = []
    for i in order:
        fact, weight = kept[i], 1.0 if lost[i] else cfg.stored_known_weight
        st = fact.statement()
        made = [make_target(policy, fact.text, (st,), q, "asked") for q in fact.questions]
        made += keyed_targets(policy, [st], 1, rng)
        for t in made:
            t.weight = weight
        out += made
    return out


def make_room(previous: Path | None, out: Path, room: int) -> tuple[Path | None, float]:
    """The adapter a sleep starts from: the previous one, or its best rank-`room` approximation (SVD) when the
    new expert would not fit beside it under the rank cap. Returns it and the compaction error (0: none)."""
    if previous is None:
        return None, 0.0
    adapter = load_adapter(previous)
    if adapter.rank <= room:
        return previous, 0.0
    compacted, error = compact(adapter, room)
    save_adapter(compacted, out)
    return out, error


def package(policy: Policy, start: Path | None, work: Path) -> Path:
    """The adapter servers would load: the adapter the sleep started from plus the new expert, rank-concatenated
    (within the cap by construction: `make_room`)."""
    new_dir, out_dir = work / "new", work / "adapter"
    policy.save_expert(new_dir)
    save_adapter(stack(([load_adapter(start)] if start else []) + [load_adapter(new_dir)]), out_dir)
    return out_dir
