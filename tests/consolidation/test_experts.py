"""Rank-stacking equals applying the experts one after another; compaction keeps outputs within tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from consolidation.experts import LoraAdapter, compact, load_adapter, save_adapter, stack
from sleepd.testing import build_random_lora

IDS = torch.tensor([[1, 523, 4219, 314, 260, 3881, 30, 2, 198, 1204, 17]])


def logits(base: Path, *adapters: Path) -> torch.Tensor:
    """Base model with each adapter merged in turn: the reference for 'all experts applied'."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for a in adapters:
        model = PeftModel.from_pretrained(model, str(a)).merge_and_unload()
    with torch.no_grad():
        return model(IDS).logits[0]


@pytest.fixture(scope="module")
def experts(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("experts")
    return [
        build_random_lora(tiny_model, root / f"e{i}", rank=8, seed=10 + i, scale=0.05, targets=targets)
        for i, targets in enumerate([(), (), ("q_proj", "v_proj")])  # the last touches fewer modules
    ]


def test_stacked_adapter_equals_the_sum_of_experts(tiny_model: Path, experts: list[Path], tmp_path: Path) -> None:
    stacked = stack([load_adapter(e) for e in experts])
    assert stacked.rank == 24
    save_adapter(stacked, tmp_path / "stacked")
    reference = logits(tiny_model, *experts)
    served = logits(tiny_model, tmp_path / "stacked")  # loaded by PEFT as one ordinary adapter
    assert torch.allclose(served, reference, atol=1e-4), (served - reference).abs().max()
    assert not torch.allclose(served, logits(tiny_model), atol=1e-2), "experts must change the output"


def test_compaction_is_exact_when_the_cap_covers_the_true_rank(tiny_model: Path, experts: list[Path]) -> None:
    one = load_adapter(experts[0])
    twice = stack([one, LoraAdapter({m: (a, 0.5 * b) for m, (a, b) in one.modules.items()}, one.config)])
    assert twice.rank == 16
    small, err = compact(twice, 8)  # the sum lives in expert 0's rank-8 subspace
    assert small.rank == 8 and err < 1e-6
    for mod in one.modules:
        assert torch.allclose(small.delta(mod), twice.delta(mod), atol=1e-5)


def test_compaction_tolerance_on_real_outputs(tiny_model: Path, experts: list[Path], tmp_path: Path) -> None:
    """Stated tolerance: compacting 24 -> 16 keeps the next-token distribution within KL 1e-3 nats (mean)."""
    stacked = stack([load_adapter(e) for e in experts])
    small, err = compact(stacked, 16)
    assert small.rank == 16 and 0 < err < 1
    save_adapter(stacked, tmp_path / "full")
    save_adapter(small, tmp_path / "small")
    p = torch.log_softmax(logits(tiny_model, tmp_path / "full"), -1)
    q = torch.log_softmax(logits(tiny_model, tmp_path / "small"), -1)
    kl = (p.exp() * (p - q)).sum(-1).mean()
    assert kl < 1e-3, kl


def test_a_sleep_makes_room_under_the_cap_before_it_trains(experts: list[Path], tmp_path: Path) -> None:
    from consolidation.sleep import make_room

    save_adapter(stack([load_adapter(e) for e in experts]), tmp_path / "previous")  # rank 24
    assert make_room(None, tmp_path / "out", 8) == (None, 0.0)
    assert make_room(tmp_path / "previous", tmp_path / "out", 24) == (tmp_path / "previous", 0.0)  # it fits
    start, err = make_room(tmp_path / "previous", tmp_path / "out", 16)  # a rank-8 expert must fit under 24
    assert start == tmp_path / "out" and load_adapter(start).rank == 16 and 0 < err < 1
