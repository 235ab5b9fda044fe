"""Where a sleep's wall time goes, piece by piece (question writing, the top-up, the projector, the gate, ...).

One sleep over the procedural suite's sessions (bench/suite.py, the served model's own replies, cached as
bench/learning.py caches them), through `consolidation.run_sleep`, with each of the sleep module's pieces
wrapped in a timer. A piece that calls another counts it too (the top-up holds its own question writing).
`--hf-generate` samples with HF's `generate` (each prompt read once per sample, finished rows decoded until
the chunk's longest ends), the side-by-side baseline for `Policy._generate_chunk`; `--whole-rows` scores every
row whole, the baseline for the shared prompt start of `Policy.completion_logits`. `--calls` also times the
model's work inside each piece (sampling, scoring, backward). Few Seeding steps and no Dreaming by default:
what is left is the work that does not train; `--steps 0 --dream-rounds 2` runs the whole sleep.

    .venv/bin/python -m bench.sleep_profile --seed 0 --facts 4 --threads 2
    .venv/bin/python -m bench.sleep_profile --seed 0 --facts 4 --threads 2 --hf-generate
    .venv/bin/python -m bench.sleep_profile --seed 0 --facts 4 --threads 2 --steps 0 --dream-rounds 2 --calls
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from bench.learning import ROOT, cached_sessions, records_of
from bench.suite import generate
from consolidation import sleep
from consolidation.dreaming import DreamingConfig
from consolidation.policy import Policy
from consolidation.seeding import SeedingConfig
from sleepd.models import resolve_model
from sleepd.registry import BASE, AdapterRegistry

PIECES = (
    "asked_questions", "top_up", "keyed_targets", "cloze_targets", "attach_teacher", "replay_targets",
    "generic_projector", "closed_book_answers", "evaluate", "package", "record_recall", "seed_knowledge", "dream",
)  # fmt: skip


STACK = ["other"]  # the innermost piece running now, for --calls


def timed(spent: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        STACK.append(name)
        try:
            return fn(*args, **kwargs)
        finally:
            STACK.pop()
            spent[name] += time.perf_counter() - start

    return wrapper


def time_calls(spent: dict[str, float]) -> None:
    """Time the model's work by piece and kind: sampling (student/teacher), scoring (the student under grad, or
    not), backward passes."""

    def by(kind: Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[f"{STACK[-1]}: {kind(*args, **kwargs)}"] += time.perf_counter() - start

        return wrapper

    def sampled(self: Policy, prompts: list[list[int]], *, student: bool, **_: Any) -> str:
        return "sample " + ("student" if student else "teacher")

    def scored(self: Policy, prompts: list[list[int]], completions: list[list[int]], *, student: bool) -> str:
        return "score " + ("student, grad" if student and torch.is_grad_enabled() else "no grad")

    setattr(Policy, "generate", by(sampled, Policy.generate))  # noqa: B010
    setattr(Policy, "completion_logits", by(scored, Policy.completion_logits))  # noqa: B010
    setattr(torch.Tensor, "backward", by(lambda *a, **k: "backward", torch.Tensor.backward))  # noqa: B010


@torch.no_grad()
def hf_generate_chunk(
    self: Policy, prompts: list[list[int]], student: bool, n: int, max_new_tokens: int, temperature: float
) -> list[list[int]]:
    """The baseline: `Policy._generate_chunk` done by HF's `generate` (its default top-k 50 when sampling)."""
    self.model.eval()
    if temperature <= 0 and n > 1:  # HF refuses num_return_sequences > 1 for greedy: repeat the rows
        prompts, n = [p for p in prompts for _ in range(n)], 1
    ids, attn = self.left_padded(prompts)
    width, pad = ids.shape[1], self.tokenizer.pad_token_id
    sampling = dict(do_sample=True, temperature=temperature, top_p=1.0) if temperature > 0 else dict(do_sample=False)
    with nullcontext() if student else self.teacher():
        out = self.model.generate(
            input_ids=ids, attention_mask=attn, max_new_tokens=max_new_tokens, num_return_sequences=n,
            pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id, **sampling,
        )  # fmt: skip
    completions = []
    for row in out[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in self.eos_ids), len(row))
        completions.append(row[:cut] + ([self.tokenizer.eos_token_id] if cut < len(row) else []))
    return completions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--facts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2, help="Seeding steps (the default budget: 0)")
    ap.add_argument("--dream-rounds", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hf-generate", action="store_true", help="sample with HF's generate (the baseline)")
    ap.add_argument("--whole-rows", action="store_true", help="score every row whole (no shared prompt start)")
    ap.add_argument("--precision", default=sleep.SleepConfig.precision, choices=["auto", "fp32", "bf16"])
    ap.add_argument("--calls", action="store_true", help="also time sampling, scoring and backward by piece")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.hf_generate:
        setattr(Policy, "_generate_chunk", hf_generate_chunk)  # noqa: B010 - the baseline path
    if args.whole_rows:
        Policy.min_shared_prefix = 10**9
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, float] = defaultdict(float)
    if args.calls:
        time_calls(calls)
    for name in PIECES:
        setattr(sleep, name, timed(spent, name, getattr(sleep, name)))

    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    facts = generate(args.seed, args.facts)
    records = records_of(cached_sessions(base, facts, args.seed), f"s{args.seed}")
    cfg = sleep.SleepConfig(
        seeding=SeedingConfig(steps=args.steps or None),
        dreaming=DreamingConfig(rounds=args.dream_rounds),
        threads=args.threads,
        precision=args.precision,
    )
    with tempfile.TemporaryDirectory(prefix="sleepd-profile-") as tmp:
        start = time.perf_counter()
        report = sleep.run_sleep(base, records, AdapterRegistry(Path(tmp)), BASE, cfg)
        total = time.perf_counter() - start
    result = {
        "config": {k: str(v) for k, v in vars(args).items()},
        "total_s": round(total, 1),
        "phases_s": {k: round(v, 1) for k, v in report.timings_s.items()},
        "pieces_s": {k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])},
        "calls_s": {k: round(v, 1) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])},
        "session_tokens": report.session_tokens,
        "statements": report.statements,
        "targets": report.targets,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
