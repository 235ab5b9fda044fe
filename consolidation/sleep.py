"""One sleep cycle as a library call: sessions -> Knowledge Seeding -> Dreaming -> gate -> adapter.

`run_sleep` reads logged exchanges, trains a new low-rank expert on top of the active adapter, evaluates it
with the gate, and writes the candidate adapter (every earlier expert plus the new one, rank-concatenated and
compacted to the engine's cap) into the registry only if the gate passes. Pointing servers at it (Redis) is
the caller's job: the CLI and the worker do it. No FastAPI, Celery or Redis here.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from consolidation.anchors import ANCHOR_PROMPTS, REPLAY_PROMPTS
from consolidation.dreaming import DreamingConfig, dream
from consolidation.experts import compact, load_adapter, save_adapter, stack
from consolidation.gate import GateConfig, GateReport, closed_book_answers, evaluate, recall
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import (
    Example,
    SeedingConfig,
    build_anchors,
    build_examples,
    grounded_questions,
    seed_knowledge,
)
from consolidation.sessions import memories
from sleepd.records import ExchangeRecord
from sleepd.registry import BASE, AdapterMeta, AdapterRegistry, Expert, base_model_fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SleepConfig:
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    seeding: SeedingConfig = field(default_factory=SeedingConfig)
    dreaming: DreamingConfig = field(default_factory=DreamingConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    questions_per_memory: int = 10  # self-generated questions with a grounded answer, per memory (train + held out)
    question_rounds: int = 1  # times questions are asked for memories still short of that (2: docs/BENCHMARKS.md)
    topic_questions: int = 4  # "What do you know about X?" per memory, X a salient phrase (questions.py)
    heldout_fraction: float = 0.34
    max_rank: int = 64  # the serving engine's max LoRA rank: compact past it
    anchors: tuple[str, ...] = ANCHOR_PROMPTS  # drift is measured here (never trained on)
    replay: tuple[str, ...] = REPLAY_PROMPTS  # rehearsed during training, with earlier sleeps' questions
    rehearsal_cap: int = 256  # earlier sleeps' questions carried in the adapter's lineage
    threads: int | None = None
    seed: int = 0


@dataclass
class SleepReport:
    published: AdapterMeta | None
    gate: GateReport
    parent: str
    sessions: int
    memories: int
    train_prompts: int
    timings_s: dict[str, float]
    tokens: dict[str, int]
    seeding_last: dict[str, float] = field(default_factory=dict)
    dreaming: list[dict[str, Any]] = field(default_factory=list)
    compaction_error: float = 0.0
    session_tokens: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "published": self.published.version if self.published else None,
            "parent": self.parent,
            "gate": {"passed": self.gate.passed, "reasons": self.gate.reasons, **self.gate.metrics()},
            "sessions": self.sessions,
            "memories": self.memories,
            "train_prompts": self.train_prompts,
            "timings_s": self.timings_s,
            "tokens_per_s": {k: self.tokens[k] / max(self.timings_s.get(k, 0), 1e-9) for k in self.tokens},
            "session_tokens": self.session_tokens,
            # Cost of a sleep in proportion to what it consolidates: seconds per 1k session tokens, per phase.
            "s_per_1k_session_tokens": {
                k: round(1000 * v / max(self.session_tokens, 1), 1) for k, v in self.timings_s.items()
            },
            "seeding_last": self.seeding_last,
            "dreaming": self.dreaming,
            "compaction_error": self.compaction_error,
        }


Progress = Callable[[str, float, dict[str, Any]], None]  # phase, fraction done, details


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
    rng = random.Random(cfg.seed)
    timings: dict[str, float] = {}
    tokens: dict[str, int] = {}
    mems = memories(records)
    if not mems:
        raise ValueError("no usable sessions to consolidate")
    previous = registry.path(active) if active != BASE else None
    policy = Policy(base_model, previous, cfg.expert, seed=cfg.seed)

    # Prompts: the sessions' user turns, plus self-generated questions that the teacher answers from the memory;
    # a third of those per memory are held out as the gate's probes.
    t0 = time.perf_counter()
    report("questions", 0.0)
    examples: list[Example] = []
    probes: list[Example] = []
    asked = grounded_questions(
        policy, mems, cfg.questions_per_memory, cfg.seeding, cfg.question_rounds, cfg.topic_questions
    )
    for found in asked:
        rng.shuffle(found)
        n_held = round(len(found) * cfg.heldout_fraction)
        probes += found[:n_held]
        examples += found[n_held:]
    examples += build_examples(policy, [(m, t) for m in mems for t in m.user_turns], cfg.seeding)
    heldout = bool(probes)
    if not heldout:  # the model wrote no usable question: fall back to the (trained) user turns, and say so
        probes = examples
    anchors = build_anchors(policy, list(cfg.anchors), cfg.gate.max_new_tokens)
    # Replay: generic prompts plus what earlier sleeps consolidated, answered by the previous model (which
    # holds those memories in its weights), so a new sleep does not overwrite the last ones.
    earlier = list(registry.get(active).lineage.get("rehearsal", [])) if previous else []
    replay = build_anchors(policy, [*cfg.replay, *earlier], cfg.seeding.max_new_tokens)
    before = recall(
        closed_book_answers(policy, probes, student=False, max_new_tokens=cfg.gate.max_new_tokens),
        probes,
        cfg.gate.match_f1,
    )
    timings["prepare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    steps = seed_knowledge(
        policy, examples, replay, cfg.seeding,
        on_step=lambda s: report("seeding", s.step / cfg.seeding.steps, loss=s.loss, fkl=s.fkl, rkl=s.rkl),
    )  # fmt: skip
    timings["seeding"] = time.perf_counter() - t0
    tokens["seeding"] = sum(s.tokens for s in steps)

    t0 = time.perf_counter()
    rounds = dream(
        policy, examples, replay, cfg.dreaming, cfg.seeding,
        on_round=lambda r: report("dreaming", r.round / cfg.dreaming.rounds, pass_rate=r.pass_rate),
    )  # fmt: skip
    timings["dreaming"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report("gate", 0.0)
    gate = evaluate(policy, probes, anchors, cfg.gate, heldout=heldout, recall_before=before)
    timings["gate"] = time.perf_counter() - t0

    published = None
    compaction_error = 0.0
    if gate.passed:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="sleepd-candidate-") as tmp:
            new_dir, out_dir = Path(tmp) / "new", Path(tmp) / "adapter"
            policy.save_expert(new_dir)
            experts = ([load_adapter(previous)] if previous else []) + [load_adapter(new_dir)]
            combined = stack(experts)
            if combined.rank > cfg.max_rank:
                combined, compaction_error = compact(combined, cfg.max_rank)
            save_adapter(combined, out_dir)
            parent_meta = registry.get(active) if previous else None
            published = registry.publish(
                out_dir,
                base_model=base_model_fingerprint(base_model),
                parent=None if active == BASE else active,
                experts=(parent_meta.experts if parent_meta else []) + [Expert(rank=cfg.expert.rank, source="sleep")],
                lineage={
                    "sessions": sorted({m.session_id.split("#")[0] for m in mems}),
                    "records": sorted({r for m in mems for r in m.record_ids}),
                    "rehearsal": list(dict.fromkeys([*earlier, *(e.question for e in [*examples, *probes])]))[
                        -cfg.rehearsal_cap :
                    ],
                },
                gate=gate.metrics() | {"compaction_error": compaction_error},
            )
        timings["publish"] = time.perf_counter() - t0
    report("done", 1.0, passed=gate.passed)
    last = asdict(steps[-1]) if steps else {}
    return SleepReport(
        published, gate, active, len({m.session_id.split("#")[0] for m in mems}), len(mems), len(examples),
        timings, tokens, last, [asdict(r) for r in rounds], compaction_error,
        sum(len(policy.tokenizer(m.render())["input_ids"]) for m in mems),
    )  # fmt: skip
