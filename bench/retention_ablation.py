"""One sleep of a retention run again, from a kept adapter, with one setting changed.

`bench/retention.py` builds sleep n on what sleep n-1 published; to ask why a sleep forgot, this reruns one of
its sleeps from the same start adapter (copied out of the run's registry) on the same sessions, changing one
setting (the null-space projection, the stored facts' rehearsal, whose answers the replay matches, the rank
cap), and scores the candidate (published or not) on sleep 1's probes, all earlier sleeps' and its own:

    .venv/bin/python -m bench.retention_ablation --start ADAPTER_DIR --group 3 --nullspace 0.9 --protect-stored
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from bench.controls import control_row
from bench.learning import RESULTS, ROOT, records_of, sessions_with_replies
from bench.retention import log_interference, recall
from bench.suite import generate
from consolidation.nullspace import NullSpaceConfig
from consolidation.policy import ExpertConfig, Policy
from consolidation.sleep import SleepConfig, run_sleep
from sleepd.models import resolve_model
from sleepd.registry import AdapterRegistry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sleeps", type=int, default=10, help="the run's --sleeps (its sessions are made together)")
    ap.add_argument("--facts-per-sleep", type=int, default=4)
    ap.add_argument("--start", type=Path, required=True, help="the adapter the sleep builds on (a version folder)")
    ap.add_argument("--group", type=int, required=True, help="which sleep's facts (1-based)")
    ap.add_argument("--nullspace", type=float, default=NullSpaceConfig.energy, help="projection energy (0: off)")
    ap.add_argument("--protect-stored", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--stored-batch", type=int, help="stored facts per training step (default: SeedingConfig's)")
    ap.add_argument("--stored-transfer", type=int, help="stored facts asked in each new question's wording")
    ap.add_argument("--transfer-twins", action="store_true", help="each drawn transfer target brings its new twin")
    ap.add_argument("--stored-known-weight", type=float, help="draw weight of a stored fact still recalled")
    ap.add_argument("--replay-from", choices=("previous", "base"), help="whose answers the generic replay matches")
    ap.add_argument(
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rehearse more the stored facts whose loss rises (consolidation/interference.py)",
    )
    ap.add_argument("--watch-scale", type=float, help="nats per token of excess rise doubling a weight")
    ap.add_argument("--watch-tokens", choices=("answer", "spans"), help="the watch's loss: whole answer or spans")
    ap.add_argument("--max-rank", type=int, default=SleepConfig.max_rank, help="compact past this rank")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument(
        "--controls", action="store_true", help="also ask each probe with an untold cue (bench/controls.py)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "retention-ablation.json")
    args = ap.parse_args()
    log_interference()

    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    n = args.facts_per_sleep
    facts = generate(args.seed, args.sleeps * n)
    convs = sessions_with_replies(base, facts)  # all of them, as the run made them (batching changes replies)
    first, own, earlier = facts[:n], facts[(args.group - 1) * n : args.group * n], facts[: (args.group - 1) * n]
    nullspace = NullSpaceConfig(energy=args.nullspace, protect_stored=args.protect_stored) if args.nullspace else None
    cfg = SleepConfig(expert=ExpertConfig(rank=16), nullspace=nullspace, threads=args.threads, max_rank=args.max_rank)
    if args.stored_batch is not None:
        cfg = dataclasses.replace(cfg, seeding=dataclasses.replace(cfg.seeding, stored_batch=args.stored_batch))
    if args.stored_transfer is not None:
        cfg = dataclasses.replace(cfg, stored_transfer=args.stored_transfer)
    if args.transfer_twins:
        cfg = dataclasses.replace(cfg, seeding=dataclasses.replace(cfg.seeding, transfer_twins=True))
    if args.stored_known_weight is not None:
        cfg = dataclasses.replace(cfg, stored_known_weight=args.stored_known_weight)
    if not args.watch:
        cfg = dataclasses.replace(cfg, watch=None)
    elif cfg.watch is not None:
        watch = cfg.watch
        if args.watch_scale is not None:
            watch = dataclasses.replace(watch, scale=args.watch_scale)
        if args.watch_tokens is not None:
            watch = dataclasses.replace(watch, tokens=args.watch_tokens)
        cfg = dataclasses.replace(cfg, watch=watch)
    if args.replay_from is not None:
        cfg = dataclasses.replace(cfg, replay_from=args.replay_from)
    with tempfile.TemporaryDirectory(prefix="sleepd-ablation-") as tmp:
        start = args.start.name
        shutil.copytree(args.start, Path(tmp) / "registry" / start)
        registry = AdapterRegistry(Path(tmp) / "registry")
        cfg = dataclasses.replace(cfg, gate=dataclasses.replace(cfg.gate, max_new_tokens=args.max_new_tokens),
                                  keep_candidate=Path(tmp) / "candidate")  # fmt: skip
        records = records_of(convs[(args.group - 1) * n : args.group * n], f"sleep{args.group}")
        report = run_sleep(base, records, registry, start, cfg)
        served = Policy.serving(base, {"candidate": Path(tmp) / "candidate"})
        summary = report.summary()
        row: dict[str, object] = {"gate": summary["gate"], "timings_s": report.timings_s,
                                  "earlier_answers": summary.get("earlier", [])}  # fmt: skip
        row["compaction_error"] = report.compaction_error
        for name, group in (("sleep1_facts", first), ("earlier_facts", earlier), ("own_facts", own)):
            if not group:
                continue
            row[name], answers = recall(served, "candidate", group, args.max_new_tokens)
            questions = [p.question for f in group for p in f.probes]
            row[f"{name}_answers"] = [list(qa) for qa in zip(questions, answers, strict=True)]
            if args.controls and name != "earlier_facts":
                controls = control_row(served, "candidate", group, args.seed, args.max_new_tokens, answers,
                                       report.trained_questions, suite=facts)  # fmt: skip
                row[f"{name}_controls"] = controls
                print(name, "controls:", json.dumps({k: v for k, v in controls.items() if k not in ("rows", "hits")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args), **row}, indent=2, default=str))
    print(json.dumps({k: v for k, v in row.items() if not k.endswith("_answers")}, default=str))


if __name__ == "__main__":
    main()
