"""Does a sleep make the model recall, closed-book, what it was told in sessions, without forgetting?

Runs on the default model (SmolLM2-135M-Instruct) with the fact suite of bench/facts.py: 8 fictional facts in
sessions, 16 held-out paraphrased probes (never trained on), recall = the answer holds the fact's keyword.
Every trained method starts from the same weights with the same budget (steps of `--batch` prompts) and the
same prepared prompts (user turns + self-generated questions, teacher answers, anchors):

- base, closed-book / in context (the bar to match)
- SFT on raw transcripts (naive baseline 1)
- SFT on the teacher's greedy answers, unfiltered (naive baseline 2)
- Knowledge Seeding, and its ablations: filtered teacher data only (forward KL), on-policy only (reverse KL + PG)
- Knowledge Seeding + Dreaming

Drift: mean per-token KL(base || trained) on the anchor prompts' base answers, and the share of anchor answers
unchanged under greedy decoding.

    .venv/bin/python -m bench.learning --steps 30 --out bench/results/learning.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.facts import FACTS
from consolidation.anchors import ANCHOR_PROMPTS, REPLAY_PROMPTS
from consolidation.dreaming import DreamingConfig, dream
from consolidation.gate import anchor_drift
from consolidation.losses import sequence_logprob
from consolidation.policy import ExpertConfig, Policy
from consolidation.seeding import SeedingConfig, build_anchors, build_examples, grounded_questions, seed_knowledge
from consolidation.sessions import Memory
from consolidation.sleep import SleepConfig
from sleepd.models import resolve_model

ROOT = Path(__file__).resolve().parents[1]


def keyword_recall(policy: Policy, prompts: list[list[int]], keywords: list[tuple[str, ...]], *, student: bool,
                   max_new_tokens: int) -> tuple[int, list[str]]:  # fmt: skip
    answers = [policy.decode(a) for a in policy.generate(prompts, student=student, max_new_tokens=max_new_tokens)]
    hits = sum(any(k in a.lower() for k in kws) for a, kws in zip(answers, keywords, strict=True))
    return hits, answers


def sft(policy: Policy, pairs: list[tuple[list[int], list[int]]], steps: int, batch: int, lr: float, seed: int) -> None:
    """Plain cross-entropy fine-tuning of the new expert on (prompt, completion) pairs."""
    rng = random.Random(seed)
    params = policy.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for _ in range(steps):
        chosen = rng.sample(pairs, min(batch, len(pairs)))
        logits, mask, toks = policy.completion_logits([p for p, _ in chosen], [c for _, c in chosen], student=True)
        loss = -sequence_logprob(logits, toks, mask).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=SeedingConfig.batch)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument(
        "--questions",
        type=int,
        default=SleepConfig.questions_per_memory,
        help="self-generated questions with a grounded teacher answer, per session",
    )
    ap.add_argument("--question-rounds", type=int, default=SleepConfig.question_rounds)
    ap.add_argument(
        "--topics",
        type=int,
        default=SleepConfig.topic_questions,
        help="'What do you know about X?' questions per session",
    )
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--methods", default="sft_transcript,sft_teacher,fkl_only,onpolicy_only,seeding,dreaming")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    ap.add_argument("--prep-threads", type=int, default=0, help="torch threads for the preparation (0: --threads)")
    ap.add_argument("--prep-cache", type=Path, help="reuse (or write) the shared preparation here")
    ap.add_argument("--lr", type=float, default=SeedingConfig.lr)
    ap.add_argument("--k", type=int, default=SeedingConfig.k, help="student samples per prompt (on-policy)")
    ap.add_argument("--hint-failures", action="store_true", help="Dreaming: failed problems learn the judge's answer")
    ap.add_argument("--onpolicy-batch", type=int, default=SeedingConfig.onpolicy_batch)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "learning.json")
    args = ap.parse_args()
    if args.prep_threads or args.threads:
        torch.set_num_threads(args.prep_threads or args.threads)

    t_start = time.perf_counter()
    base = Path(resolve_model(args.model, ROOT / "data" / "models"))
    policy = Policy(base, None, ExpertConfig(rank=args.rank))
    mems = [Memory(f"fact{i}", list(f.session)) for i, f in enumerate(FACTS)]
    seed_cfg = SeedingConfig(
        steps=args.steps, batch=args.batch, k=args.k, onpolicy_batch=args.onpolicy_batch, lr=args.lr,
        max_new_tokens=args.max_new_tokens,
    )  # fmt: skip

    # Shared preparation, all by the base model (= every method's teacher). Cached on request: it is sampled
    # once, so methods compared across runs see the very same prompts and teacher answers.
    t0 = time.perf_counter()
    if args.prep_cache and args.prep_cache.exists():
        examples, greedy, anchors, replay, prep_s = pickle.loads(args.prep_cache.read_bytes())
    else:
        asked = grounded_questions(policy, mems, args.questions, seed_cfg, args.question_rounds, args.topics)
        examples = [e for found in asked for e in found]
        examples += build_examples(policy, [(m, t) for m in mems for t in m.user_turns], seed_cfg)
        # The naive baseline learns the teacher's raw greedy answers: not cut, not verified, not filtered.
        greedy = [policy.decode(a) for a in policy.generate([e.teacher_prompt for e in examples], student=False,
                                                            max_new_tokens=args.max_new_tokens)]  # fmt: skip
        anchors = build_anchors(policy, list(ANCHOR_PROMPTS), args.max_new_tokens)  # drift, never trained on
        replay = build_anchors(policy, list(REPLAY_PROMPTS), args.max_new_tokens)
        prep_s = time.perf_counter() - t0
        if args.prep_cache:
            args.prep_cache.parent.mkdir(parents=True, exist_ok=True)
            args.prep_cache.write_bytes(pickle.dumps((examples, greedy, anchors, replay, prep_s)))
    if args.threads:
        torch.set_num_threads(args.threads)
    probe_q = [(i, q) for i, f in enumerate(FACTS) for q in f.probes]
    closed = [policy.chat_ids([{"role": "user", "content": q}]) for _, q in probe_q]
    opened = [policy.chat_ids([{"role": "user", "content": q}], context=mems[i].render()) for i, q in probe_q]
    keys = [FACTS[i].keywords for i, _ in probe_q]
    session_tokens = sum(len(policy.tokenizer(m.render())["input_ids"]) for m in mems)

    rows: list[dict[str, object]] = []

    def record(name: str, train_s: float, *, student: bool = True, ids: list[list[int]] = closed) -> None:
        hits, answers = keyword_recall(policy, ids, keys, student=student, max_new_tokens=args.max_new_tokens)
        kl, unchanged = anchor_drift(policy, anchors, args.max_new_tokens) if student else (0.0, 1.0)
        row = {"method": name, "recall": hits, "probes": len(ids), "anchor_kl": round(kl, 4),
               "anchors_unchanged": round(unchanged, 3), "train_s": round(train_s, 1),
               "s_per_1k_session_tokens": round(1000 * train_s / session_tokens, 1), "answers": answers}  # fmt: skip
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "answers"}), flush=True)

    record("base, closed-book", 0.0, student=False)
    record("in context (the bar)", 0.0, student=False, ids=opened)

    def teacher_pairs() -> list[tuple[list[int], list[int]]]:
        eos = policy.tokenizer.eos_token_id
        return [
            (e.student_prompt, policy.tokenizer(g)["input_ids"] + [eos])
            for e, g in zip(examples, greedy, strict=True)
            if g
        ]

    def transcript_pairs() -> list[tuple[list[int], list[int]]]:
        out = []
        for m in mems:
            ids = policy.tokenizer.apply_chat_template(m.transcript, tokenize=False)
            toks = policy.tokenizer(str(ids), add_special_tokens=False)["input_ids"]
            out.append((toks[:1], toks[1:]))
        return out

    methods: dict[str, Callable[[], object]] = {
        "sft_transcript": lambda: sft(policy, transcript_pairs(), args.steps, args.batch, args.lr, 0),
        "sft_teacher": lambda: sft(policy, teacher_pairs(), args.steps, args.batch, args.lr, 0),
        "fkl_only": lambda: seed_knowledge(
            policy, examples, replay, dataclasses.replace(seed_cfg, w_rkl=0, w_pg=0, w_replay=0)
        ),
        "onpolicy_only": lambda: seed_knowledge(
            policy, examples, replay, dataclasses.replace(seed_cfg, w_fkl=0, w_replay=0)
        ),
        "seeding": lambda: seed_knowledge(policy, examples, replay, seed_cfg),
        # Continues from the method before it (normally "seeding"), so its row is Seeding + Dreaming.
        "dreaming": lambda: dream(
            policy,
            examples,
            replay,
            DreamingConfig(
                rounds=2,
                steps_per_round=args.steps // 3,
                max_new_tokens=args.max_new_tokens,
                hint_failures=args.hint_failures,
            ),
            seed_cfg,
        ),
    }
    print(f"prepared in {prep_s:.0f} s: {len(examples)} prompts, {sum(bool(e.answers) for e in examples)} with "
          f"{sum(len(e.answers) for e in examples)} grounded teacher answers, {session_tokens} session tokens",
          flush=True)  # fmt: skip
    previous_s = 0.0
    for name in args.methods.split(","):
        if name != "dreaming":
            policy.reset_expert()
            previous_s = 0.0
        t0 = time.perf_counter()
        methods[name]()
        previous_s += time.perf_counter() - t0
        record(name if name != "dreaming" else "seeding + dreaming", previous_s)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "config": {k: str(v) for k, v in vars(args).items()}, "prepare_s": prep_s, "session_tokens": session_tokens,
        "train_prompts": len(examples), "grounded_prompts": sum(bool(e.answers) for e in examples),
        "kept_teacher_answers": sum(len(e.answers) for e in examples),
        "total_s": time.perf_counter() - t_start, "rows": rows,
    }, indent=2))  # fmt: skip
    print("\n| method | held-out recall | anchor KL | anchors unchanged | train s | s / 1k session tokens |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['recall']}/{r['probes']} | {r['anchor_kl']} | {r['anchors_unchanged']} "
              f"| {r['train_s']} | {r['s_per_1k_session_tokens']} |")  # fmt: skip


if __name__ == "__main__":
    main()
