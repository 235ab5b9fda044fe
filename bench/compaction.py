"""Capacity without loss: what cutting a lineage's adapter under the rank cap keeps.

Takes a version from a retention run's registry (`bench/retention.py --registry DIR`, `--publish-all` to reach
the cap; the run's facts are regenerated from the same --seed, --sleeps and --facts-per-sleep) and cuts it to
each of --ranks as a sleep past the cap does (`consolidation.experts.compact`, truncated SVD). Each form, as
served (the adapter unmerged on the fp32 base), answers the suite's probes of every fact of the run
closed-book; the gate's anchors give its drift (KL per token) against the uncut version and against the base.
No training: this isolates the cut a sleep past the cap starts from (`consolidation.sleep.make_room`).

    .venv/bin/python -m bench.compaction --registry /tmp/runs/ret-s9 --seed 9 --sleeps 4 --ranks 48 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.learning import RESULTS, ROOT, ask, score
from bench.suite import generate
from consolidation.experts import compact, load_adapter, save_adapter
from consolidation.gate import drift
from consolidation.policy import ExpertConfig, Policy
from consolidation.sleep import SleepConfig
from sleepd.models import resolve_model
from sleepd.registry import AdapterRegistry


def paired(cut: list[bool], full: list[bool]) -> dict[str, int]:
    """Probes the cut form gets right that the uncut one does not, and the reverse (a sign test's pairs)."""
    return {"gained": sum(x and not y for x, y in zip(cut, full, strict=True)),
            "lost": sum(y and not x for x, y in zip(cut, full, strict=True))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", type=Path, required=True, help="a retention run's --registry")
    ap.add_argument("--version", help="the version to cut (default: the newest)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, required=True, help="the run's --seed")
    ap.add_argument("--sleeps", type=int, required=True, help="the run's --sleeps")
    ap.add_argument("--facts-per-sleep", type=int, default=4)
    ap.add_argument("--ranks", type=int, nargs="+", default=[SleepConfig.max_rank - ExpertConfig.rank])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "compaction.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    registry = AdapterRegistry(args.registry)
    version = args.version or registry.versions()[-1].version
    meta, path = registry.get(version), registry.path(version)
    facts = generate(args.seed, args.sleeps * args.facts_per_sleep)
    cfg = SleepConfig()
    full = load_adapter(path)
    out: dict[str, Any] = {
        "config": {k: str(v) for k, v in vars(args).items()}, "version": version, "rank": full.rank,
        "stored_facts": len(meta.lineage.get("facts", [])), "rows": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sleepd-compaction-") as tmp:
        forms: dict[str, Path] = {"full": path}
        errors: dict[str, float] = {}
        for k in args.ranks:
            cut, errors[f"rank{k}"] = compact(full, k)
            save_adapter(cut, Path(tmp) / f"rank{k}")
            forms[f"rank{k}"] = Path(tmp) / f"rank{k}"
        served = Policy.serving(base, forms)
        anchors = [served.chat_ids([{"role": "user", "content": a}]) for a in cfg.anchors]
        items = [(f, p) for f in facts for p in f.probes]
        prompts = [served.chat_ids([{"role": "user", "content": p.question}]) for _, p in items]
        per_sleep = len(items) // args.sleeps
        hits: dict[str, list[bool]] = {}
        for name in forms:
            scored = score(ask(served, name, prompts, args.max_new_tokens), items)
            hits[name] = scored["hits"]
            by_sleep = [sum(hits[name][i * per_sleep : (i + 1) * per_sleep]) for i in range(args.sleeps)]
            row = {"form": name, "recall": scored["all"], "by_sleep": by_sleep}
            row["error"] = round(errors.get(name, 0.0), 3)
            if name != "full":
                row["kl_vs_full"] = round(drift(served, "full", name, anchors, args.max_new_tokens)[0], 4)
            row["kl_vs_base"] = round(drift(served, None, name, anchors, args.max_new_tokens)[0], 4)
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    for k in args.ranks:
        out[f"rank{k} vs uncut"] = paired(hits[f"rank{k}"], hits["full"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}), flush=True)


if __name__ == "__main__":
    main()
