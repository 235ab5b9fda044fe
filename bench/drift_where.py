"""Where a candidate adapter's drift sits on the gate's anchors: per anchor, per answer position, and the tokens
whose probability moved most. The gate reports one number (KL per token, base || candidate, on the base's greedy
answers); this says whether that number is a few tokens moved a lot (an answer's opening, the end of turn) or
every token moved a little, which decides what kind of fix can work.

    .venv/bin/python -m bench.drift_where --candidate bench/results/cand-s0 --threads 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from consolidation.anchors import ANCHOR_PROMPTS
from consolidation.losses import forward_kl_per_token
from sleepd.models import resolve_model

ROOT = Path(__file__).resolve().parent.parent

# Prompts nothing in the repo trains on, monitors, gates on or was tuned against: the check that a change which
# lowers the gate's anchor KL lowers drift in general and did not just fit the anchors.
AUDIT_PROMPTS: tuple[str, ...] = (
    "What would happen if the Earth stopped spinning?",
    "Plan a three-day trip to Rome.",
    "Rewrite this sentence more politely: 'Give me the salt.'",
    "Tell a short joke about computers.",
    "What are the symptoms of a cold?",
    "Translate 'thank you very much' into Spanish.",
    "Calculate the square root of 81.",
    "Write an email asking for a day off.",
    "Compare cats and dogs as pets.",
    "What does a firefighter do?",
    "Propose a slogan for a recycling campaign.",
    "Outline the steps to boil an egg.",
    "How do airplanes stay in the air?",
    "Describe your ideal weekend.",
    "How is weather different from climate?",
    "Give three tips for learning a new language.",
)


@torch.no_grad()
def main() -> None:
    from consolidation.policy import Policy

    ap = argparse.ArgumentParser()
    ap.add_argument("--candidate", type=Path, required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--prompts", choices=("anchors", "audit"), default="anchors")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    served = Policy.serving(base, {"candidate": args.candidate})
    texts = ANCHOR_PROMPTS if args.prompts == "anchors" else AUDIT_PROMPTS
    prompts = [served.chat_ids([{"role": "user", "content": a}]) for a in texts]
    with served.using(None):
        answers = served.generate(prompts, student=True, max_new_tokens=args.max_new_tokens)
        ref, mask, tokens = served.completion_logits(prompts, answers, student=True)
    with served.using("candidate"):
        now, _, _ = served.completion_logits(prompts, answers, student=True)
        again = served.generate(prompts, student=True, max_new_tokens=args.max_new_tokens)
    kl = forward_kl_per_token(ref, now) * mask  # (B, T)
    t, s = F.log_softmax(ref.float(), -1), F.log_softmax(now.float(), -1)  # for the moved tokens' probabilities
    total = float(kl.sum() / mask.sum())
    per_anchor = []
    for i, prompt in enumerate(texts):
        n = int(mask[i].sum())
        per_anchor.append({"anchor": prompt, "kl": round(float(kl[i].sum()) / max(n, 1), 4), "tokens": n,
                           "base": served.decode(answers[i]), "candidate": served.decode(again[i])})  # fmt: skip
    buckets = {}
    for lo, hi in ((0, 1), (1, 4), (4, 16), (16, 10_000)):
        m = mask[:, lo:hi]
        buckets[f"{lo}-{hi}"] = round(float(kl[:, lo:hi].sum() / m.sum().clamp_min(1)), 4)
    # The tokens that carry the most KL, with the base's and the candidate's probability of the base's token.
    flat = [(float(kl[i, j]), i, j) for i in range(kl.shape[0]) for j in range(int(mask[i].sum()))]
    flat.sort(reverse=True)
    share_top = sum(v for v, _, _ in flat[: max(1, len(flat) // 20)]) / max(sum(v for v, _, _ in flat), 1e-9)
    top = []
    for v, i, j in flat[:20]:
        tok = int(tokens[i, j])
        cand_top = int(s[i, j].argmax())
        top.append({"kl": round(v, 3), "anchor": i, "pos": j, "token": served.decode([tok]),
                    "p_base": round(float(t[i, j, tok].exp()), 3), "p_cand": round(float(s[i, j, tok].exp()), 3),
                    "cand_argmax": served.decode([cand_top])})  # fmt: skip
    # Chain rule: KL(base || cand) per token = the binary KL over {end of turn, anything else} + the rest. The
    # first part is drift in *when to stop* (answers made shorter), the rest in *what to say*.
    eos = served.tokenizer.eos_token_id
    pb, pc = t[..., eos].exp().clamp(1e-9, 1 - 1e-9), s[..., eos].exp().clamp(1e-9, 1 - 1e-9)
    stop_kl = (pb * (pb / pc).log() + (1 - pb) * ((1 - pb) / (1 - pc)).log()) * mask
    stop = {"p_base": round(float((pb * mask).sum() / mask.sum()), 4),
            "p_candidate": round(float((pc * mask).sum() / mask.sum()), 4),
            "kl": round(float(stop_kl.sum() / mask.sum()), 4),
            "share": round(float(stop_kl.sum() / kl.sum().clamp_min(1e-9)), 3)}  # fmt: skip
    result = {"anchor_kl": round(total, 4), "by_position": buckets, "top5pct_share": round(share_top, 3),
              "end_of_turn": stop,
              "unchanged": sum(a == b for a, b in zip(answers, again, strict=True)), "per_anchor": per_anchor,
              "top_tokens": top}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
