"""Knowledge incorporation in SEAL's setting: SQuAD passages told in sessions, one sleep, questions closed-book.

Data: `../shared/data/squad-dev.json` (SQuAD v1.1 dev passages of 24 Wikipedia articles, from the SEAL
repository's knowledge-incorporation data; CC BY-SA 4.0, Rajpurkar et al. 2016). Passages are drawn by seed;
each is pasted by the user in its own session ("Here is a passage I am reading: ..."), answered by the served
model, then one sleep consolidates all of them (`consolidation.run_sleep`). The passage's questions are asked
closed-book of the base model and of the served model after the sleep, and in context (the passage's session,
then the question as the next turn). An answer counts when it states the reference answer as whole words
after normalisation (`suite.states`; SEAL used a grader model, this is stricter).
SEAL's reference (Qwen2.5-7B, one passage at a time): 32.7% base -> 47.0% after its self-edits.

    .venv/bin/python -m bench.squad --passages 8 --seed 1 --out bench/results/squad.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.learning import RESULTS, ROOT, _printer, ask, leaks, paired_ratio, records_of, wilson
from bench.suite import states
from consolidation.policy import ExpertConfig, Policy
from consolidation.sleep import SleepConfig, run_sleep
from sleepd.models import resolve_model
from sleepd.registry import BASE, AdapterRegistry

DATA = ROOT.parent / "shared" / "data" / "squad-dev.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--passages", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "squad.json")
    ap.add_argument("--keep-candidate", type=Path, help="copy the candidate adapter here (bench/drift_where.py)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    data = json.loads(args.data.read_text())
    chosen = random.Random(args.seed).sample(data, args.passages)

    model = Policy(base, None, ExpertConfig(rank=1), precision="fp32")  # replies as vLLM serves them (fp32)
    convs = []
    for p in chosen:
        turn = {"role": "user", "content": f"Here is a passage I am reading:\n\n{p['context']}\n\nPlease remember it."}
        reply = model.generate([model.chat_ids([turn])], student=False, max_new_tokens=64)[0]
        convs.append([turn, {"role": "assistant", "content": model.decode(reply)}])
    del model
    items = [(i, q["question"], q["answer"]) for i, p in enumerate(chosen) for q in p["questions"]]
    result: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="sleepd-squad-") as tmp:
        registry = AdapterRegistry(Path(tmp) / "registry")
        candidate = Path(tmp) / "candidate"
        t0 = time.perf_counter()
        cfg = dataclasses.replace(SleepConfig(threads=args.threads or None), keep_candidate=candidate)
        report = run_sleep(base, records_of(convs, f"squad{args.seed}"), registry, BASE, cfg, progress=_printer())
        result["sleep"] = report.summary()
        # Reported, not fatal: the sleep writes its own questions from the passage (as SEAL's self-edits do) and
        # never sees the dataset's; a match means the model asked itself the same question.
        result["probes_matching_trained_questions"] = len(leaks([q for _, q, _ in items], report.trained_questions))
        result["train_s"] = round(time.perf_counter() - t0, 1)
        if args.keep_candidate:
            shutil.copytree(candidate, args.keep_candidate, dirs_exist_ok=True)
        published = registry.path(report.published.version) if report.published else None
        evaluator = Policy.serving(base, {"candidate": candidate, **({"published": published} if published else {})})
        closed = [evaluator.chat_ids([{"role": "user", "content": q}]) for _, q, _ in items]
        opened = [evaluator.chat_ids([*convs[i], {"role": "user", "content": q}]) for i, q, _ in items]
        rows: dict[str, Any] = {}
        hits: dict[str, list[bool]] = {}
        answers: dict[str, list[str]] = {}
        for name, adapter, prompts in (
            ("base, closed-book", None, closed),
            ("in context (the bar)", None, opened),
            ("after the sleep, served", "published" if published else None, closed),
            ("candidate adapter", "candidate", closed),
        ):
            answers[name] = ask(evaluator, adapter, prompts, args.max_new_tokens)
            hits[name] = [states(a, ref) for a, (_, _, ref) in zip(answers[name], items, strict=True)]
            k, n = sum(hits[name]), len(items)
            rows[name] = {"correct": k, "n": n, "rate": round(k / n, 3), "ci95": wilson(k, n)}
            print(json.dumps({name: rows[name]}), flush=True)
    result["rows"] = rows
    result["closed_over_context"] = paired_ratio(hits["candidate adapter"], hits["in context (the bar)"])
    # What users get: differs from the candidate when the gate refused it (the base is served then).
    result["served_over_context"] = paired_ratio(hits["after the sleep, served"], hits["in context (the bar)"])
    result["answers"] = {name: [[q, ref, a] for (_, q, ref), a in zip(items, got, strict=True)]
                         for name, got in answers.items()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
