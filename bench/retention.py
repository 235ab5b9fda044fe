"""Does the first sleep's knowledge survive the sleeps after it?

Sequential sleeps through the product's own path (`consolidation.run_sleep`, a scratch registry, the gate):
each sleep consolidates new facts of the procedural suite (bench/suite.py, one seed, disjoint facts per
sleep), with sessions carrying the served model's replies, and builds on the last *published* adapter. After
every sleep the served model (base + active adapter) answers, closed-book, the probes of sleep 1's facts and of
this sleep's facts. Retention = sleep 1's recall after the last sleep / right after sleep 1. `--max-rank`
sets where compaction starts (each sleep adds a rank-`--rank` expert); a large value turns it off.

    .venv/bin/python -m bench.retention --sleeps 10 --facts-per-sleep 4 --out bench/results/retention.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.learning import RESULTS, ROOT, ask, records_of, score, sessions_with_replies
from bench.suite import Fact, generate
from consolidation.dreaming import DreamingConfig
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import SeedingConfig
from consolidation.sleep import SleepConfig, run_sleep
from sleepd.models import resolve_model
from sleepd.registry import BASE, AdapterRegistry


def recall(served: Policy, adapter: str, facts: list[Fact], max_new_tokens: int) -> tuple[dict[str, Any], list[str]]:
    """Closed-book score of `facts`' probes with `adapter` as served, and the answers (probe order)."""
    items = [(f, p) for f in facts for p in f.probes]
    prompts = [served.chat_ids([{"role": "user", "content": p.question}]) for _, p in items]
    answers = ask(served, adapter, prompts, max_new_tokens)
    return score(answers, items)["all"], answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sleeps", type=int, default=10)
    ap.add_argument("--facts-per-sleep", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--max-rank", type=int, default=SleepConfig.max_rank, help="compact past this rank")
    ap.add_argument("--dream-rounds", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "retention.json")
    args = ap.parse_args()

    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    facts = generate(args.seed, args.sleeps * args.facts_per_sleep)
    groups = [facts[i * args.facts_per_sleep : (i + 1) * args.facts_per_sleep] for i in range(args.sleeps)]
    convs = sessions_with_replies(base, facts)
    cfg = SleepConfig(
        expert=ExpertConfig(rank=args.rank), seeding=SeedingConfig(), dreaming=DreamingConfig(rounds=args.dream_rounds),
        max_rank=args.max_rank, threads=args.threads or None,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, gate=dataclasses.replace(cfg.gate, max_new_tokens=args.max_new_tokens))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="sleepd-retention-") as tmp:
        registry = AdapterRegistry(Path(tmp))
        active = BASE
        for n, group in enumerate(groups, start=1):
            t0 = time.perf_counter()
            start = n - 1
            records = records_of(convs[start * args.facts_per_sleep : n * args.facts_per_sleep], f"sleep{n}")
            report = run_sleep(base, records, registry, active, cfg)
            if report.published:
                active = report.published.version
            row: dict[str, object] = {
                "sleep": n, "published": report.published.version if report.published else None,
                "gate": report.summary()["gate"], "timings_s": report.timings_s,
                "session_tokens": report.session_tokens, "compaction_error": report.compaction_error,
                "rank": registry.get(active).rank if active != BASE else 0, "stored_facts": report.stored_facts,
            }  # fmt: skip
            if active != BASE:
                served = Policy.serving(base, {"active": registry.path(active)})
                for name, scored in (("sleep1_facts", groups[0]), ("own_facts", group)):
                    row[name] = recall(served, "active", scored, args.max_new_tokens)[0]
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)
    kept = [r["sleep1_facts"]["correct"] for r in rows if "sleep1_facts" in r]  # type: ignore[index]
    retention = kept[-1] / kept[0] if kept and kept[0] else 0.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args), "rows": rows, "retention": retention}, indent=2,
                                   default=str))  # fmt: skip
    print(
        f"\nretention of sleep 1's facts after {len(rows)} sleeps: {kept[-1] if kept else 0}/"
        f"{kept[0] if kept else 0} = {retention:.2f}"
    )


if __name__ == "__main__":
    main()
