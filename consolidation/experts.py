"""Low-rank experts: each sleep adds one LoRA expert; the served adapter is their rank-concatenation.

For one module, expert i contributes delta_i = s_i * B_i @ A_i (s_i = alpha_i / r_i). Stacking the A's and
concatenating the scaled B's gives one LoRA of rank sum(r_i) whose delta is the sum of the experts' deltas:

    A = [A_1; A_2; ...]   (sum r) x in        B = [s_1 B_1, s_2 B_2, ...]   out x (sum r),   alpha = r

saved as an ordinary PEFT adapter (scaling alpha / r = 1) that vLLM, PEFT and LoRAX load unchanged. When the
total rank would pass the engine's cap, `compact` replaces the stack by the best rank-k approximation of the
summed delta (truncated SVD, computed through QR of the thin factors so the full out x in matrix never forms).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class LoraAdapter:
    """A LoRA adapter in memory: per module (PEFT key prefix) its A (r x in) and B (out x r), scaling folded in B."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    config: dict  # type: ignore[type-arg]  # the PEFT adapter_config.json, kept for the fields we do not touch

    @property
    def rank(self) -> int:
        return max((a.shape[0] for a, _ in self.modules.values()), default=0)

    def delta(self, module: str) -> torch.Tensor:
        a, b = self.modules[module]
        return b @ a


def load_adapter(path: Path) -> LoraAdapter:
    config = json.loads((path / "adapter_config.json").read_text())
    tensors = load_file(str(path / "adapter_model.safetensors"))
    r = int(config["r"])
    scaling = float(config.get("lora_alpha", r)) / (r**0.5 if config.get("use_rslora") else r)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if m:
            parts.setdefault(m["module"], {})[m["ab"]] = value.float()
    modules = {mod: (p["A"], p["B"] * scaling) for mod, p in parts.items() if "A" in p and "B" in p}
    return LoraAdapter(modules, config)


def save_adapter(adapter: LoraAdapter, path: Path) -> None:
    """Write as a plain PEFT LoRA (alpha = r, so the stored B already carries the scaling)."""
    path.mkdir(parents=True, exist_ok=True)
    rank = adapter.rank
    tensors: dict[str, torch.Tensor] = {}
    for mod, (a, b) in adapter.modules.items():
        a, b = _pad(a, b, rank)
        tensors[f"{mod}.lora_A.weight"] = a.contiguous()
        tensors[f"{mod}.lora_B.weight"] = b.contiguous()
    targets = sorted({mod.rsplit(".", 1)[-1] for mod in adapter.modules})
    config = {
        **adapter.config,
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": rank,
        "use_rslora": False,
        "target_modules": targets,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))


def stack(experts: list[LoraAdapter]) -> LoraAdapter:
    """Rank-concatenate experts: the result's delta is the sum of theirs, for every module any of them has."""
    if not experts:
        raise ValueError("nothing to stack")
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    names = sorted({m for e in experts for m in e.modules})
    for mod in names:
        a_parts, b_parts = [], []
        for e in experts:
            if mod in e.modules:
                a, b = e.modules[mod]
            else:  # an expert that did not touch this module contributes a zero block of its rank
                ref_a, ref_b = next(x.modules[mod] for x in experts if mod in x.modules)
                a = torch.zeros(e.rank, ref_a.shape[1])
                b = torch.zeros(ref_b.shape[0], e.rank)
            a, b = _pad(a, b, e.rank)
            a_parts.append(a)
            b_parts.append(b)
        modules[mod] = (torch.cat(a_parts, dim=0), torch.cat(b_parts, dim=1))
    return LoraAdapter(modules, dict(experts[-1].config))


def compact(adapter: LoraAdapter, max_rank: int) -> tuple[LoraAdapter, float]:
    """Best rank-`max_rank` approximation of each module's delta. Returns it and the worst relative error
    ||delta - delta_k||_F / ||delta||_F over modules (0 when nothing had to be cut)."""
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    worst = 0.0
    for mod, (a, b) in adapter.modules.items():
        if a.shape[0] <= max_rank:
            modules[mod] = (a, b)
            continue
        a64, b64 = a.double(), b.double()
        qb, rb = torch.linalg.qr(b64)  # B = Qb Rb
        qa, ra = torch.linalg.qr(a64.T)  # A^T = Qa Ra  ->  delta = Qb (Rb Ra^T) Qa^T
        u, s, vh = torch.linalg.svd(rb @ ra.T)
        total = float(s.square().sum().sqrt())
        kept = s[:max_rank]
        if total > 0:
            worst = max(worst, float(s[max_rank:].square().sum().sqrt()) / total)
        root = kept.sqrt()
        new_b = (qb @ u[:, :max_rank]) * root  # out x k
        new_a = root[:, None] * (vh[:max_rank] @ qa.T)  # k x in
        modules[mod] = (new_a.float(), new_b.float())
    return LoraAdapter(modules, dict(adapter.config)), worst


def _pad(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad a module's factors up to `rank` (zero rows of A / columns of B add nothing to the delta)."""
    r = a.shape[0]
    if r == rank:
        return a, b
    return (
        torch.cat([a, torch.zeros(rank - r, a.shape[1])], dim=0),
        torch.cat([b, torch.zeros(b.shape[0], rank - r)], dim=1),
    )
