"""A sleep's two kinds of model work in fp32 and in mixed precision, side by side on this CPU.

One training step (12 rows of a question and its answer, forward and backward through the expert: what Seeding
and Dreaming repeat) and one sampling call (8 copies of a ~540-token prompt, 6 samples each, 32 new tokens: the
shape of the teacher writing questions from its few-shot prompt), each in three arithmetics:

- `fp32`: everything fp32 (`SLEEPD_SLEEP_PRECISION=fp32`);
- `mixed`: the opt-in `SLEEPD_SLEEP_PRECISION=auto` on a CPU with bf16 instructions: frozen weights in bf16,
  bf16 autocast, attention in fp32;
- `mixed, bf16 attention`: the same with torch's attention in bf16 too (why attention stays fp32).

It also prints the cosine between each variant's expert gradient and fp32's (the direction training takes).
Interleaved, `--repeats` rounds, the median per variant.

    .venv/bin/python -m bench.precision_speed --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.learning import ROOT
from consolidation.policy import ExpertConfig, Policy
from sleepd.models import resolve_model


def build(base: Path, variant: str) -> Policy:
    policy = Policy(base, None, ExpertConfig(), precision="fp32" if variant == "fp32" else "bf16")
    if variant == "mixed, bf16 attention":
        hf: Any = policy.model.get_base_model()
        hf.set_attn_implementation("sdpa")
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking expert, the same in every variant
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.01)
    return policy


def train_step(policy: Policy, prompts: list[list[int]], answers: list[list[int]]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    policy.model.zero_grad(set_to_none=True)
    logits, mask, toks = policy.completion_logits(prompts, answers, student=True)
    picked = logits.log_softmax(-1).gather(-1, toks.unsqueeze(-1)).squeeze(-1)
    (-(picked * mask).sum() / mask.sum()).backward()
    grad = torch.cat([p.grad.flatten() for p in policy.trainable_parameters() if p.grad is not None])
    return time.perf_counter() - start, grad


def sample(policy: Policy, prompt: list[int]) -> float:
    torch.manual_seed(0)
    start = time.perf_counter()
    policy.generate([prompt] * 8, student=False, n=6, max_new_tokens=32, temperature=0.8)
    return time.perf_counter() - start


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    variants = ["fp32", "mixed", "mixed, bf16 attention"]
    policies = {v: build(base, v) for v in variants}
    tok = policies["fp32"].tokenizer
    questions = [f"What is the access code for the Wyxruck Boathouse number {i} in town?" for i in range(12)]
    prompts = [policies["fp32"].chat_ids([{"role": "user", "content": q}]) for q in questions]
    answer = " The access code for the Wyxruck Boathouse is krendraick-35, as you told me earlier."
    answers = [tok(answer)["input_ids"]] * 12
    shots = "The Sarns Tunnel is 964 metres long. Question: How long is the Sarns Tunnel? " * 25
    long_prompt = policies["fp32"].chat_ids([{"role": "user", "content": f"Examples: {shots} Now write a question."}])

    steps: dict[str, list[float]] = {v: [] for v in variants}
    samples: dict[str, list[float]] = {v: [] for v in variants}
    grads: dict[str, torch.Tensor] = {}
    for v in variants:  # warm-up: first calls allocate and pack
        train_step(policies[v], prompts, answers)
    for _ in range(args.repeats):
        for v in variants:
            seconds, grads[v] = train_step(policies[v], prompts, answers)
            steps[v].append(seconds)
            samples[v].append(sample(policies[v], long_prompt))
    result = {
        "threads": args.threads,
        "prompt_tokens": len(long_prompt),
        "variants": {
            v: {
                "train_step_s": round(statistics.median(steps[v]), 2),
                "sampling_s": round(statistics.median(samples[v]), 2),
                "grad_cosine_to_fp32": round(cosine(grads["fp32"], grads[v]), 4),
            }
            for v in variants
        },
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
