"""Does erasure reach the weights? One tenant's sessions, one sleep, one session erased, the lineage rebuilt.

The library path of the erase job (worker/erase.py), with the procedural suite (bench/suite.py) by seed:
each fact told in its own session carrying the served model's own replies; one sleep (`run_sleep`) publishes a
version whose lineage names every session; the first `--erase` sessions are erased; `tainted_versions` and
`clean_ancestor` (the erase job's own functions) pick what to rebuild from; one sleep over the remaining sessions
rebuilds it. Every probe is asked closed-book of the base model, the first version and the rebuilt one.

Reported: recall of the erased facts (should fall back to the base model's) and of the kept ones (how many the
rebuild still recalls, vs the first version), rebuild seconds, Wilson 95% intervals, strict scoring. A version
the gate rejects is registered anyway, marked (`first_gate` / `rebuild_gate` in the result say so), so that
erasure is measured on the weights a sleep made.

    .venv/bin/python -m bench.erasure --seed 1 --facts 8 --erase 2 --threads 1 --out bench/results/erasure-s1.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.learning import RESULTS, ROOT, _printer, ask, cached_sessions, records_of, score
from bench.suite import generate
from consolidation.policy import ExpertConfig, Policy
from consolidation.sleep import SleepConfig, run_sleep
from sleepd.models import resolve_model
from sleepd.registry import BASE, AdapterRegistry, base_model_fingerprint
from worker.erase import clean_ancestor, tainted_versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--erase", type=int, default=2, help="sessions (facts) erased")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "erasure.json")
    ap.add_argument("--phase", choices=("all", "rebuild", "probe"), default="all",
                    help="rebuild: only the rebuild sleep (the first version's lineage names every session, so it "
                    "starts from the base model), its adapter kept in --workdir; probe: only the probes, of the "
                    "adapters given by --first and --rebuilt. The two can run at once on two cores.")  # fmt: skip
    ap.add_argument("--workdir", type=Path, default=RESULTS / "erasure-work")
    ap.add_argument("--first", type=Path)
    ap.add_argument("--rebuilt", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    facts = generate(args.seed, args.facts)
    convs = cached_sessions(base, facts, args.seed)
    records = records_of(convs, f"s{args.seed}")
    sessions = list(dict.fromkeys(r.session_id for r in records))
    assert len(sessions) == len(facts), "one session per fact"
    erased = set(sessions[: args.erase])
    cfg = SleepConfig(expert=ExpertConfig(rank=args.rank), threads=args.threads or None)
    result: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}}
    groups = {
        "erased": [(f, p) for f, s in zip(facts, sessions, strict=True) if s in erased for p in f.probes],
        "kept": [(f, p) for f, s in zip(facts, sessions, strict=True) if s not in erased for p in f.probes],
    }
    if args.phase == "rebuild":
        registry = AdapterRegistry(args.workdir / "registry")
        again_cfg = dataclasses.replace(cfg, keep_candidate=args.workdir / "rebuilt")
        t0 = time.perf_counter()
        kept = [r for r in records if r.session_id not in erased]
        rebuilt = run_sleep(base, kept, registry, BASE, again_cfg, progress=_printer())
        result |= {
            "rebuild_s": round(time.perf_counter() - t0, 1), "rebuild_gate": rebuilt.summary()["gate"],
            "rebuilt_sessions": sorted({r.session_id for r in kept}), "adapter": str(args.workdir / "rebuilt"),
        }  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
        return
    if args.phase == "probe":
        adapters = {k: v for k, v in (("first", args.first), ("rebuilt", args.rebuilt)) if v}
        result["rows"] = _probe(base, adapters, groups, args.max_new_tokens)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
        return

    with tempfile.TemporaryDirectory(prefix="sleepd-erasure-") as tmp:
        registry = AdapterRegistry(Path(tmp) / "registry")
        t0 = time.perf_counter()
        first_cfg = dataclasses.replace(cfg, keep_candidate=Path(tmp) / "first")
        first = run_sleep(base, records, registry, BASE, first_cfg, progress=_printer())
        result["first_sleep_s"] = round(time.perf_counter() - t0, 1)
        result["first_gate"] = first.summary()["gate"]
        v1 = first.published.version if first.published else _override(registry, base, first_cfg, sessions)

        versions = registry.versions()
        tainted = tainted_versions(versions, erased)
        clean, chain = clean_ancestor(v1, {m.version: m for m in versions}, tainted)
        relearn = {s for v in chain for s in registry.get(v).lineage["sessions"]} - erased
        t0 = time.perf_counter()
        again_cfg = dataclasses.replace(cfg, keep_candidate=Path(tmp) / "rebuilt")
        rebuilt = run_sleep(base, [r for r in records if r.session_id in relearn], registry, clean, again_cfg,
                            progress=_printer())  # fmt: skip
        result["rebuild_s"] = round(time.perf_counter() - t0, 1)
        result["rebuild_gate"] = rebuilt.summary()["gate"]
        v2 = rebuilt.published.version if rebuilt.published else _override(registry, base, again_cfg, sorted(relearn))
        result |= {"tainted": sorted(tainted), "clean_ancestor": clean, "rebuilt": v2,
                   "rebuilt_sessions": registry.get(v2).lineage["sessions"] if v2 else []}  # fmt: skip

        result["rows"] = _probe(base, {"first": registry.path(v1), "rebuilt": registry.path(v2)}, groups,
                                args.max_new_tokens)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))


def _probe(base: Path, adapters: dict[str, Path], groups: dict[str, list[Any]], max_new_tokens: int) -> dict[str, Any]:
    """Every probe closed-book, per group (erased, kept), on the base model and on each adapter."""
    served = Policy.serving(base, adapters)
    rows: dict[str, Any] = {}
    for group, items in groups.items():
        prompts = [served.chat_ids([{"role": "user", "content": p.question}]) for _, p in items]
        for name in (None, *adapters):
            row = score(ask(served, name, prompts, max_new_tokens), items)["all"]
            rows[f"{group} facts, {name or 'base'}"] = row
            print(json.dumps({f"{group} facts, {name or 'base'}": row}), flush=True)
    return rows


def _override(registry: AdapterRegistry, base: Path, cfg: SleepConfig, sessions: list[str]) -> str:
    """The gate rejected the candidate: register it anyway (marked) so that erasure is still measured on it.
    The product would have kept the previous version; the result file says which versions were overridden."""
    assert cfg.keep_candidate is not None
    print(json.dumps({"gate_overridden": str(cfg.keep_candidate.name)}), flush=True)
    return registry.publish(cfg.keep_candidate, base_model=base_model_fingerprint(base), lineage={"sessions": sessions},
                            gate={"overridden": True}).version  # fmt: skip


if __name__ == "__main__":
    main()
