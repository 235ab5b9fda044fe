"""Sleep's training and sampling speed on a GPU, with the product's own code (`consolidation.policy.Policy`).

For a lent device machine: it has torch, transformers and peft, no network, no vLLM, and takes at most 64 MiB
of the tree, so this script builds everything itself: a randomly initialised Llama of the default model's
shape (SmolLM2-135M: 30 layers, hidden 576, vocab 49152) and a word-level tokenizer with the same chat
markup. With CUDA, Policy trains in bf16 on the GPU. Prints one JSON line per measurement and a summary:

- sampling: batched `Policy.generate` with the new expert enabled (a sleep's on-policy and Dreaming samples);
- teacher scoring: `completion_logits` over long in-context prompts (a sleep's teacher top-k pass);
- training: student forward + backward + AdamW step on the distillation loss (a Seeding step).

    python -m bench.gpu_check                   # on the device; well under 8 minutes on one GPU
    python -m bench.gpu_check --small --steps 2 # on a CPU, as the tests run it
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from consolidation.losses import sequence_logprob
from consolidation.policy import ExpertConfig, Policy

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_model(out: Path, *, hidden: int, layers: int, heads: int, kv_heads: int, inter: int, vocab: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    words = {w: i for i, w in enumerate(specials + [f"w{i}" for i in range(vocab - len(specials))])}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>")  # fmt: skip
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden // heads,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def text(rng: random.Random, n: int, vocab: int) -> str:
    return " ".join(f"w{rng.randrange(vocab - 3)}" for _ in range(n))


def timed(fn, sync: bool) -> float:  # type: ignore[no-untyped-def]
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a 2-layer model, for a CPU smoke run")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--samples", type=int, default=64, help="sequences per sampling call")
    args = ap.parse_args()
    shape = dict(hidden=576, layers=30, heads=9, kv_heads=3, inter=1536, vocab=49152)
    if args.small:
        shape = dict(hidden=64, layers=2, heads=2, kv_heads=1, inter=128, vocab=1024)
    cuda = torch.cuda.is_available()
    rng = random.Random(0)
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__, "shape": shape,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sleepd-gpu-check-") as tmp:
        t0 = time.perf_counter()
        policy = Policy(build_model(Path(tmp), **shape), None, ExpertConfig(rank=16))
        report["setup_s"] = round(time.perf_counter() - t0, 1)
        report["dtype"] = str(next(policy.model.parameters()).dtype)
        # Prompts of sleep's sizes: questions (~40 tokens) for the student, the session in context (~500) for the
        # teacher, answers of ~48 tokens.
        vocab = int(shape["vocab"])
        questions = [policy.chat_ids([{"role": "user", "content": text(rng, 30, vocab)}]) for _ in range(args.samples)]
        contexts = [policy.chat_ids([{"role": "user", "content": text(rng, 30, vocab)}], context=text(rng, 480, vocab))
                    for _ in range(args.batch)]  # fmt: skip
        answers = [[rng.randrange(3, vocab) for _ in range(48)] for _ in range(args.batch)]

        policy.generate(questions[:4], student=True, max_new_tokens=8, temperature=0.8)  # warm-up
        out: list[list[int]] = []
        s = timed(lambda: out.extend(policy.generate(questions, student=True, max_new_tokens=64, temperature=0.8)),
                  cuda)  # fmt: skip
        report["sampling_tok_s"] = round(sum(len(o) for o in out) / s, 1)
        print(json.dumps({"sampling": {"sequences": len(out), "tokens": sum(len(o) for o in out), "s": round(s, 2)}}))

        def score() -> None:
            with torch.no_grad():
                policy.completion_logits(contexts, answers, student=False)

        score()
        s = timed(score, cuda)
        report["teacher_tok_s"] = round(sum(len(c) + 48 for c in contexts) / s, 1)

        params = policy.trainable_parameters()
        opt = torch.optim.AdamW(params, lr=1e-3)
        prompts = questions[: args.batch]

        def step() -> None:
            logits, mask, toks = policy.completion_logits(prompts, answers, student=True)
            loss = -sequence_logprob(logits, toks, mask).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        s = sum(timed(step, cuda) for _ in range(args.steps))
        report["train_tok_s"] = round(args.steps * sum(len(p) + 48 for p in prompts) / s, 1)
        report["train_step_s"] = round(s / args.steps, 3)
        if cuda:
            report["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
