"""Does the first sleep's knowledge survive the sleeps after it?

Sequential sleeps through the product's own path (`consolidation.run_sleep`, a scratch registry, the gate):
each sleep consolidates new facts of the procedural suite (bench/suite.py, one seed, disjoint facts per
sleep), with sessions carrying the served model's replies, and builds on the last *published* adapter. After
every sleep the served model (base + active adapter) answers, closed-book, the probes of sleep 1's facts and of
this sleep's facts. Retention = sleep 1's recall after the last sleep / right after sleep 1. `--max-rank`
sets where compaction starts (each sleep adds a rank-`--rank` expert); a large value turns it off. As in the
worker (worker/cycle.py), a rejected sleep's sessions join the next sleep, until `--max-rejections` rejections
set them aside. With `--registry DIR` the run can be stopped and continued with `--resume` (a 10-sleep run
is ~2 h here).

    .venv/bin/python -m bench.retention --sleeps 10 --facts-per-sleep 4 --out bench/results/retention.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import shutil
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
from sleepd.config import Settings
from sleepd.models import resolve_model
from sleepd.records import ExchangeRecord
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
    ap.add_argument("--max-rejections", type=int, default=Settings().sleep_max_rejections)
    ap.add_argument("--out", type=Path, default=RESULTS / "retention.json")
    ap.add_argument("--registry", type=Path, help="keep the adapters here (default: a temporary folder)")
    ap.add_argument("--resume", action="store_true", help="continue the run `--out` and `--registry` hold")
    ap.add_argument(
        "--publish-all", action="store_true", help="a gate that passes every sleep (a lineage for bench/compaction.py)"
    )
    args = ap.parse_args()
    log_interference()

    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    facts = generate(args.seed, args.sleeps * args.facts_per_sleep)
    groups = [facts[i * args.facts_per_sleep : (i + 1) * args.facts_per_sleep] for i in range(args.sleeps)]
    convs = sessions_with_replies(base, facts)
    cfg = SleepConfig(
        expert=ExpertConfig(rank=args.rank), seeding=SeedingConfig(), dreaming=DreamingConfig(rounds=args.dream_rounds),
        max_rank=args.max_rank, threads=args.threads or None,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, gate=dataclasses.replace(cfg.gate, max_new_tokens=args.max_new_tokens))
    if args.publish_all:
        big = 1e9  # finite: the limits are written into each version's metadata
        gate = dataclasses.replace(
            cfg.gate, min_recall_gain=-big, max_anchor_kl=big, max_base_kl=big, min_stored_kept=0.0
        )
        cfg = dataclasses.replace(cfg, gate=gate)
    state: dict[str, Any] = {"active": BASE, "pending": [], "rejections": 0}
    rows: list[dict[str, Any]] = []
    if args.resume:
        done = json.loads(args.out.read_text())
        state, rows = done["state"], done["rows"]

    def sessions_of(n: int) -> list[ExchangeRecord]:
        return records_of(convs[(n - 1) * args.facts_per_sleep : n * args.facts_per_sleep], f"sleep{n}")

    with contextlib.ExitStack() as stack:
        root = args.registry or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sleepd-retention-")))
        registry = AdapterRegistry(root)
        # A rejected candidate is scored too: what the gate refused, in the suite's terms.
        candidate = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sleepd-candidate-")))
        cfg = dataclasses.replace(cfg, keep_candidate=candidate)
        for n in range(len(rows) + 1, args.sleeps + 1):
            t0 = time.perf_counter()
            # Sessions of rejected sleeps (state["pending"]: their numbers) join this one, as in the worker.
            records = [r for g in state["pending"] for r in sessions_of(g)] + sessions_of(n)
            shutil.rmtree(candidate, ignore_errors=True)
            report = run_sleep(base, records, registry, state["active"], cfg)
            carried, published = len(state["pending"]), report.published.version if report.published else None
            set_aside = advance(state, n, published, args.max_rejections)
            summary = report.summary()
            active = state["active"]
            row: dict[str, object] = {
                "sleep": n, "published": published,
                "carried_sleeps": carried, "set_aside_sleeps": set_aside,
                "gate": summary["gate"], "timings_s": report.timings_s,
                "session_tokens": report.session_tokens, "compaction_error": report.compaction_error,
                "rank": registry.get(active).rank if active != BASE else 0, "stored_facts": report.stored_facts,
                "earlier": summary["earlier"],  # the gate's retention probes, previous vs candidate
            }  # fmt: skip
            if active != BASE:
                served = Policy.serving(base, {"active": registry.path(active)})
                for name, scored in (("sleep1_facts", groups[0]), ("own_facts", groups[n - 1])):
                    row[name] = recall(served, "active", scored, args.max_new_tokens)[0]
            if not published and candidate.exists():
                refused = Policy.serving(base, {"candidate": candidate})
                row["candidate_sleep1_facts"] = recall(refused, "candidate", groups[0], args.max_new_tokens)[0]
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)
            write(args, rows, state if args.registry else None)


def log_interference() -> None:
    """Show which stored facts' loss rose as each sleep trains (consolidation/interference.py), and warnings."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("consolidation.interference").setLevel(logging.INFO)


def advance(state: dict[str, Any], n: int, published: str | None, max_rejections: int) -> int:
    """After sleep `n`: a published version becomes active and clears the pending sleeps; a rejected sleep's
    sessions wait for the next one, until `max_rejections` rejections in a row set them all aside, as the
    worker's watermark does (worker/cycle.py). Returns how many sleeps' sessions were set aside."""
    if published:
        state |= {"active": published, "pending": [], "rejections": 0}
        return 0
    state["rejections"] += 1
    state["pending"].append(n)
    if state["rejections"] < max_rejections:
        return 0
    set_aside = len(state["pending"])
    state |= {"pending": [], "rejections": 0}
    return set_aside


def write(args: argparse.Namespace, rows: list[dict[str, Any]], state: dict[str, Any] | None) -> None:
    """The results so far (after every sleep: a long run stopped early keeps them), with what `--resume` needs
    when the registry is kept."""
    kept = [r["sleep1_facts"]["correct"] for r in rows if "sleep1_facts" in r]
    retention = kept[-1] / kept[0] if kept and kept[0] else 0.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    out = {"config": config, "rows": rows, "retention": retention, **({"state": state} if state else {})}
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(f"retention of sleep 1's facts after {len(rows)} sleeps: {kept[-1] if kept else 0}/"
          f"{kept[0] if kept else 0} = {retention:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
