"""Does the first sleep's knowledge survive four more sleeps?

Five sequential sleeps through the product's own path (`consolidation.sleep.run_sleep`, a scratch registry,
the publish gate): sleep 1 consolidates the sessions of bench/facts.py FACTS, sleeps 2-5 three new facts each
(LATER_FACTS). After every sleep, the active adapter answers every probe asked so far closed-book (base model
+ adapter, greedy); retention = sleep 1's recall after sleep 5 / its recall right after sleep 1. Each sleep
builds on the last *published* adapter: a sleep the gate rejects publishes nothing, and the table says so.

    .venv/bin/python -m bench.retention --steps 30 --out bench/results/retention.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from bench.facts import FACTS, LATER_FACTS, Fact
from bench.learning import keyword_recall
from consolidation.dreaming import DreamingConfig
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import SeedingConfig
from consolidation.sleep import SleepConfig, run_sleep
from sleepd.models import resolve_model
from sleepd.records import ExchangeRecord, LoggedChoice
from sleepd.registry import BASE, AdapterRegistry

ROOT = Path(__file__).resolve().parents[1]


def fact_records(facts: tuple[Fact, ...], prefix: str) -> list[ExchangeRecord]:
    """Each fact's session as the server logs it: the request messages and the final assistant reply."""
    out = []
    for i, f in enumerate(facts):
        *messages, last = f.session
        if last["role"] != "assistant":
            messages, last = f.session, {"role": "assistant", "content": ""}
        out.append(
            ExchangeRecord(
                session_id=f"{prefix}-{i}",
                endpoint="chat",
                model="default",
                messages=list(messages),
                choices=[LoggedChoice(text=last["content"], finish_reason="stop")],
            )  # fmt: skip
        )
    return out


def served(base: Path, adapter: Path | None) -> Policy:
    """The model servers run (base + adapter), loaded once per evaluation; its fresh expert is a no-op."""
    return Policy(base, adapter, ExpertConfig(rank=1))


def recall_of(policy: Policy, facts: tuple[Fact, ...], max_new_tokens: int) -> tuple[int, int]:
    prompts = [policy.chat_ids([{"role": "user", "content": q}]) for f in facts for q in f.probes]
    keys = [f.keywords for f in facts for _ in f.probes]
    hits, _ = keyword_recall(policy, prompts, keys, student=False, max_new_tokens=max_new_tokens)
    return hits, len(prompts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--sleeps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--dream-rounds", type=int, default=0)
    ap.add_argument("--questions", type=int, default=SleepConfig.questions_per_memory)
    ap.add_argument("--max-rank", type=int, default=SleepConfig.max_rank, help="compact the adapter past this rank")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retention.json")
    args = ap.parse_args()

    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    groups = [FACTS] + [LATER_FACTS[i * 3 : i * 3 + 3] for i in range(args.sleeps - 1)]
    cfg = SleepConfig(
        expert=ExpertConfig(rank=16),
        seeding=SeedingConfig(steps=args.steps, max_new_tokens=args.max_new_tokens),
        dreaming=DreamingConfig(rounds=args.dream_rounds, max_new_tokens=args.max_new_tokens),
        questions_per_memory=args.questions,
        max_rank=args.max_rank,
        threads=args.threads or None,
    )
    cfg = dataclasses.replace(cfg, gate=dataclasses.replace(cfg.gate, max_new_tokens=args.max_new_tokens))
    rows: list[dict[str, object]] = []
    sleep1_hits: list[int] = []
    with tempfile.TemporaryDirectory(prefix="sleepd-retention-") as tmp:
        registry = AdapterRegistry(Path(tmp))
        active = BASE
        first = recall_of(served(base, None), FACTS, args.max_new_tokens)
        print(json.dumps({"sleep": 0, "sleep1_facts_recall": first}), flush=True)
        for n, facts in enumerate(groups, start=1):
            t0 = time.perf_counter()
            report = run_sleep(base, fact_records(facts, f"s{n}"), registry, active, cfg)
            if report.published:
                active = report.published.version
            model = served(base, registry.path(active) if active != BASE else None)
            sleep1 = recall_of(model, FACTS, args.max_new_tokens)
            sleep1_hits.append(sleep1[0])
            row: dict[str, object] = {
                "sleep": n,
                "published": report.published.version if report.published else None,
                "gate": report.gate.metrics() | {"reasons": report.gate.reasons},
                "own_facts_recall": recall_of(model, facts, args.max_new_tokens),
                "sleep1_facts_recall": sleep1,
                "rank": registry.get(active).rank if active != BASE else 0,
                "compaction_error": report.compaction_error,
                "timings_s": report.timings_s,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    after_first, last = sleep1_hits[0], sleep1_hits[-1]
    retention = last / after_first if after_first else 0.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()}, "base_recall": first,
                                    "rows": rows, "retention": retention}, indent=2))  # fmt: skip
    print(f"\nretention of sleep 1's facts after {len(rows)} sleeps: {last}/{after_first} = {retention:.2f}")


if __name__ == "__main__":
    main()
