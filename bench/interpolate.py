"""Weight-space interpolation of a first sleep's adapter toward the base (WiSE-FT, Wortsman et al. 2022): the
adapter's delta scaled by alpha: below 1, does a smaller step keep the recall and shed the drift; above 1
(extrapolating the step), does the drift budget a sleep left unused buy recall?

A first sleep's adapter is base + B A; scaling every lora_B by alpha gives base + alpha B A. For each alpha this
reports the gate's anchor KL against the base (`consolidation.gate.drift`, the gate's own anchors and settings)
and the procedural suite's closed-book score (bench/learning.py's probes and strict scoring).

    .venv/bin/python -m bench.learning --seed 0 --facts 8 --keep-candidate bench/results/cand-s0 ...
    .venv/bin/python -m bench.interpolate --candidate bench/results/cand-s0 --seed 0 --facts 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.learning import RESULTS, ROOT, ask, score
from bench.suite import generate
from consolidation.gate import drift
from consolidation.policy import Policy
from consolidation.sleep import SleepConfig
from sleepd.models import resolve_model

WEIGHTS = "adapter_model.safetensors"


def scaled(candidate: Path, alpha: float, out: Path) -> Path:
    shutil.copytree(candidate, out)
    tensors = load_file(str(candidate / WEIGHTS))
    save_file({k: v * alpha if "lora_B" in k else v for k, v in tensors.items()}, str(out / WEIGHTS))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", type=Path, required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--alphas", default="1.0,0.8,0.65,0.5")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "interpolate.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    cfg = SleepConfig()
    items = [(f, p) for f in generate(args.seed, args.facts) for p in f.probes]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sleepd-wise-") as tmp:
        alphas = [float(a) for a in args.alphas.split(",")]
        name = {a: f"alpha{round(100 * a)}" for a in alphas}  # PEFT adapter names cannot hold a "."
        adapters = {name[a]: scaled(args.candidate, a, Path(tmp) / name[a]) for a in alphas}
        served = Policy.serving(base, adapters)
        anchors = [served.chat_ids([{"role": "user", "content": a}]) for a in cfg.anchors]
        closed = [served.chat_ids([{"role": "user", "content": p.question}]) for _, p in items]
        for a in alphas:
            kl, unchanged = drift(served, None, name[a], anchors, cfg.gate.max_new_tokens)
            got = score(ask(served, name[a], closed, args.max_new_tokens), items)
            row = {"alpha": a, "anchor_kl": round(kl, 4), "anchor_unchanged": unchanged, "closed_book": got["all"],
                   "forward": got["forward"], "reverse": got["reverse"]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
