"""The grouped CPU LoRA ops (app/cpu_lora.py) against vLLM's own torch ops: same results for rows with an
adapter, exactly zero LoRA contribution for rows without one (vLLM's ops give those the last slot's delta)."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from vllm.lora.ops import torch_ops as vllm_ops

from app import cpu_lora

SLOTS, RANK, DIN, DOUT = 4, 16, 48, 80


@pytest.fixture
def weights() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(SLOTS, 1, RANK, DIN, generator=g), torch.randn(SLOTS, 1, DOUT, RANK, generator=g)


@pytest.mark.parametrize(
    "indices",
    [[0, 0, 0, 0, 0], [0, 1, 2, 1, 0], [3, 3, 1, 0, 2], [-1, 2, -1, 0, 3], [-1, -1, -1, -1, -1]],
    ids=["one adapter", "three adapters", "last slot used", "mixed with base rows", "no adapter"],
)
def test_decode_ops_match_vllm_on_adapter_rows_and_leave_base_rows_alone(
    weights: tuple[torch.Tensor, torch.Tensor], indices: list[int]
) -> None:
    a, b = weights
    idx = torch.tensor(indices)
    x = torch.randn(len(indices), DIN)
    start = torch.randn(len(indices), DOUT)
    results = {}
    for name, ops in (("vllm", vllm_ops), ("grouped", cpu_lora)):
        mid = torch.full((len(indices), RANK), 7.0)
        ops.bgmv_shrink(x, a, mid, idx, 0.5)
        out = start.clone()
        ops.bgmv_expand(mid, b, out, idx, True)
        results[name] = (mid, out)
    keep = idx >= 0
    torch.testing.assert_close(results["grouped"][0][keep], results["vllm"][0][keep])
    torch.testing.assert_close(results["grouped"][1][keep], results["vllm"][1][keep], rtol=1e-4, atol=1e-4)
    assert (results["grouped"][0][~keep] == 0).all()
    assert torch.equal(results["grouped"][1][~keep], start[~keep])  # no LoRA: the base output, bit for bit


def test_prefill_slice_ops_follow_each_sequence_adapter(weights: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = weights
    seq_lens, seq_loras = torch.tensor([5, 7, 3]), torch.tensor([3, -1, 1])
    tokens = int(seq_lens.sum())
    x = torch.randn(tokens, DIN)
    results = {}
    for name, ops in (("vllm", vllm_ops), ("grouped", cpu_lora)):
        mid = torch.zeros(tokens, RANK)
        ops.sgmv_shrink(x, a, mid, None, seq_lens, seq_loras, 3, 7, tokens, 1.0)
        out = torch.zeros(tokens, 3 * DOUT)
        ops.sgmv_expand_slice(mid, b, out, None, seq_lens, seq_loras, 3, 7, tokens, DOUT, DOUT, True)
        results[name] = out
    keep = torch.repeat_interleave(seq_loras, seq_lens) >= 0
    torch.testing.assert_close(results["grouped"][keep], results["vllm"][keep], rtol=1e-4, atol=1e-4)
    assert (results["grouped"][~keep] == 0).all()
    assert (results["grouped"][:, :DOUT] == 0).all() and (results["grouped"][:, 2 * DOUT :] == 0).all()


def test_expand_without_add_overwrites(weights: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, b = weights
    idx = torch.tensor([2, -1])
    mid = torch.randn(2, RANK)
    out = torch.full((2, DOUT), 5.0)
    cpu_lora.bgmv_expand(mid, b, out, idx, add_inputs=False)
    torch.testing.assert_close(out[0], mid[0] @ b[2, 0].T)
    assert (out[1] == 0).all()


def test_plugin_is_declared_for_vllm_and_replaces_the_cpu_wrapper_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    points = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert any(p.value == "app.cpu_lora:register" for p in points), "reinstall: pip install -e ."
    from vllm.lora.punica_wrapper import punica_cpu

    for name in cpu_lora.OPS:
        monkeypatch.setattr(punica_cpu, name, getattr(vllm_ops, name))
    monkeypatch.setenv("SLEEPD_CPU_LORA_OPS", "vllm")
    cpu_lora.register()
    assert punica_cpu.bgmv_shrink is vllm_ops.bgmv_shrink
    monkeypatch.delenv("SLEEPD_CPU_LORA_OPS")
    cpu_lora.register()
    assert all(getattr(punica_cpu, name) is op for name, op in cpu_lora.OPS.items())
