"""Small real models for tests and benchmarks, built locally (no hub): a tiny random Llama with SmolLM2's
tokenizer and chat template, taken from the bundled GGUF. Real weights, real tokenizer; just small."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sleepd.models import bundled_gguf


def build_tiny_llama(out_dir: Path, *, hidden: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """A random Llama (2 layers, hidden 128, vocab 49152) saved as an HF folder; built once per folder."""
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = bundled_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def build_random_lora(
    base_dir: Path, out_dir: Path, *, rank: int = 8, seed: int = 1, scale: float = 0.5, targets: tuple[str, ...] = ()
) -> Path:
    """A valid PEFT LoRA adapter for `base_dir` with random (non-zero) B matrices, so it visibly changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    modules = list(targets) or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=modules))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    peft_model.save_pretrained(str(out_dir))
    return out_dir
