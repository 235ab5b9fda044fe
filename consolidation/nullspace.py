"""Keep the new expert from reading the directions generic text uses (null-space constrained updates, after
AlphaEdit, Fang et al., ICLR 2025).

A LoRA expert changes a layer's output by B A x. Where the layer's inputs x on generic text lie in a subspace
U, an A whose rows are orthogonal to U leaves those outputs unchanged: the expert then moves what the sessions'
inputs have outside U, and generic behaviour (the gate's anchors) only through what is left. Each adapted
layer's U is taken from its inputs on the replay sequences (prompts and the replayed model's answers: never
the gate's anchors) as the leading eigenvectors of their second moment, up to `energy` of its trace; after
every optimizer step, A <- A (I - U U^T). Earlier sleeps' stored facts are protected the same way (`protected`):
kept off generic inputs only, the update went into what same-kind fact questions share and overwrote the stored
facts (docs/BENCHMARKS.md, "Retention over sequential sleeps").

Measured on the tuning seed before use (docs/BENCHMARKS.md, "Where the update goes: null-space projection").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from consolidation.policy import Policy
from consolidation.targets import Target


@dataclass(frozen=True)
class NullSpaceConfig:
    # Share of the generic inputs' second moment whose directions A may not read. 0.95 cut drift on every
    # suite (tuning seed 0.063 -> 0.054, report seed 0.062 -> 0.054, SQuAD 0.110 -> 0.082) but cost the report
    # seed 26 -> 16 of 64 probes, so 0.9 stays (docs/BENCHMARKS.md, "How much energy to protect").
    energy: float = 0.9
    max_share: float = 0.5  # never take more than this share of a layer's input dimensions from A
    protect_stored: bool = True  # earlier sleeps' stored facts join the replay's inputs (consolidation/sleep.py)


class InputProjector:
    """A <- A P for each adapted layer of the new expert (P: projector onto what generic inputs leave free)."""

    def __init__(self, pairs: list[tuple[torch.nn.Parameter, torch.Tensor]], removed: dict[str, float]) -> None:
        self.pairs = pairs
        self.removed = removed  # layer kind -> mean share of input dimensions taken from A (for reports)

    @torch.no_grad()
    def apply(self) -> None:
        for a, p in self.pairs:
            a.copy_(a @ p)


def _expert_layers(policy: Policy) -> dict[str, torch.nn.Module]:
    """The layers the new expert adapts ("default" LoRA), by module name."""
    return {
        name: m
        for name, m in policy.model.named_modules()
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})
    }


@torch.no_grad()
def generic_projector(
    policy: Policy, generic: list[Target], cfg: NullSpaceConfig, protected: list[Target] | None = None
) -> InputProjector:
    """Measure each adapted layer's inputs on `generic` sequences (one at a time: no padding enters the
    statistics), and build the projector that removes their leading directions from the expert's A.
    `protected` (earlier sleeps' facts) weighs as much as all of `generic` together, token for token: a few
    short fact questions would otherwise vanish beside the replay's longer answers."""
    layers = _expert_layers(policy)
    moments: dict[str, torch.Tensor] = {}
    group: dict[str, torch.Tensor] = {}
    # Layers fed the very same tensor (q/k/v, gate/up) share one moment and one eigendecomposition: found in
    # the first forward pass by the input's identity. `live` holds each input until the pass ends, so no freed
    # tensor's id can be reused by another layer's input meanwhile.
    same: dict[str, str] = {}
    live: dict[int, tuple[str, torch.Tensor]] = {}

    def hook(name: str):  # noqa: ANN202 - a forward pre-hook
        def grab(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if name not in same:
                same[name] = live.setdefault(id(args[0]), (name, args[0]))[0]
            if same[name] == name:
                x = args[0].detach().float().reshape(-1, args[0].shape[-1])
                group[name] = group.get(name, 0) + x.T @ x

        return grab

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        for targets in (generic, protected or []):
            group.clear()
            for t in targets:
                policy.completion_logits([t.student_prompt], [t.answer], student=False)
                live.clear()
            tokens = sum(len(t.student_prompt) + len(t.answer) for t in targets)
            for name, m2 in group.items():  # each set's mean second moment per token
                moments[name] = moments.get(name, 0) + m2 / max(tokens, 1)
    finally:
        for h in handles:
            h.remove()

    pairs: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    shares: dict[str, list[float]] = {}
    projectors: dict[str, tuple[torch.Tensor, float]] = {}
    for name, m in layers.items():
        a: torch.nn.Parameter = m.lora_A["default"].weight  # type: ignore[index,union-attr]  # (r, d)
        key = same[name]
        if key not in projectors:
            values, vectors = torch.linalg.eigh(moments[key].double())  # ascending
            values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
            cum = values.cumsum(0) / values.sum().clamp_min(1e-12)
            d = values.numel()
            k = min(int((cum < cfg.energy).sum()) + 1, int(cfg.max_share * d))
            u = vectors[:, :k].to(a.dtype)
            projectors[key] = ((torch.eye(d, dtype=a.dtype) - u @ u.T).to(a.device), k / d)
        p, share = projectors[key]
        pairs.append((a, p))
        shares.setdefault(name.rsplit(".", 1)[-1], []).append(share)
    projector = InputProjector(pairs, {kind: round(sum(v) / len(v), 3) for kind, v in shares.items()})
    projector.apply()  # A starts random: start it outside the generic subspace too
    return projector
