"""How drift moves during a sleep: the student's KL to the start model, every few steps of Seeding and after each
Dreaming round, on the monitor prompts (what the drift budget watches) and on the gate's anchor prompts (what
the gate judges), side by side, with nothing stopped. This calibrates the drift budget (consolidation/drift.py)
against the gate's limit; run it on the tuning seed, never the report seed.

    .venv/bin/python -m bench.drift_trace --seed 0 --facts 8 --threads 1 --out bench/results/drift-trace-s0.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.learning import RESULTS, ROOT, cached_sessions, records_of
from bench.suite import generate
from consolidation.dreaming import dream
from consolidation.drift import monitor_kl
from consolidation.policy import Policy
from consolidation.seeding import StepLog, seed_knowledge
from consolidation.sessions import memories
from consolidation.sleep import SleepConfig, prepare, training_hooks
from consolidation.statements import statements
from consolidation.targets import replay_targets
from sleepd.models import resolve_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "drift-trace.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    facts = generate(args.seed, args.facts)
    records = records_of(cached_sessions(base, facts, args.seed), f"s{args.seed}")
    cfg = SleepConfig()
    t0 = time.perf_counter()
    policy = Policy(base, None, cfg.expert, seed=cfg.seed)
    found = [s for m in memories(records) for s in statements(m)]
    prep = prepare(policy, found, [], cfg, lambda done, step: None)
    tokens = cfg.seeding.max_new_tokens
    replay = replay_targets(policy, list(cfg.replay), tokens, cfg.top_k)
    sets = {
        "monitor": replay_targets(policy, list(cfg.monitor), tokens, cfg.top_k),
        "anchors": replay_targets(policy, list(cfg.anchors), tokens, cfg.top_k),
    }
    trace: list[dict[str, Any]] = []

    def measure(phase: str, step: int) -> None:
        row = {"phase": phase, "step": step, **{name: round(monitor_kl(policy, t), 4) for name, t in sets.items()}}
        trace.append(row)
        print(json.dumps(row), flush=True)

    def on_step(log: StepLog) -> None:
        if log.step % args.every == 0:
            measure("seeding", log.step)

    hooks = training_hooks(policy, replay, cfg)
    steps = seed_knowledge(policy, prep.targets, prep.stored, replay, cfg.seeding, on_step=on_step, **hooks)
    rounds = dream(policy, prep.targets, replay, cfg.dreaming, cfg.seeding,
                   on_round=lambda r: measure("dreaming", r.round), stored=prep.stored, **hooks)  # fmt: skip
    out = {
        "config": vars(args) | {"out": str(args.out)},
        "targets": len(prep.targets),
        "seeding_steps": len(steps),
        "dream_rounds": len(rounds),
        "seconds": round(time.perf_counter() - t0, 1),
        "trace": trace,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
