"""Merged-serving weights (pure file-and-tensor logic, no engine): the merged checkpoint is what PEFT's own
merge gives, and a difference adapter's delta is exactly target - current."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.adapters import serving_mode
from app.merging import NotMergeable, NotRepresentable, difference_adapter, merged_model, read_delta
from sleepd.testing import build_random_lora
from tests.conftest import CACHE


def dense(delta: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {module: b @ a for module, (a, b) in delta.items()}


def test_merged_checkpoint_equals_peft_merge(tiny_model: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = build_random_lora(tiny_model, CACHE / "adapters" / "tiny-one", seed=1)
    folder = merged_model(tiny_model, adapter, tmp_path / "merged", "key1")
    ours = load_file(str(folder / "model.safetensors"))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), adapter)
    theirs = peft.merge_and_unload().state_dict()
    changed = [k for k in ours if not torch.equal(ours[k], load_file(str(tiny_model / "model.safetensors"))[k])]
    assert len(changed) == 2 * 7, "every projection of both layers carries the delta"
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], rtol=0, atol=1e-6)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert merged_model(tiny_model, adapter, tmp_path / "merged", "key1") == folder  # cached by key


def test_difference_adapter_delta_is_target_minus_current(tiny_model: Path, tmp_path: Path) -> None:
    one = build_random_lora(tiny_model, CACHE / "adapters" / "tiny-one", seed=1)
    q_only = build_random_lora(tiny_model, tmp_path / "q-only", rank=4, seed=2, targets=("q_proj",))
    diff = dense(read_delta(difference_adapter(q_only, read_delta(one), tmp_path / "diff", 64)))
    target, current = dense(read_delta(q_only)), dense(read_delta(one))
    assert set(diff) == set(current)
    for module, delta in diff.items():
        expected = target.get(module, torch.zeros_like(delta)) - current[module]
        torch.testing.assert_close(delta, expected, rtol=0, atol=1e-6)
    to_base = dense(read_delta(difference_adapter(None, read_delta(one), tmp_path / "to-base", 64)))
    for module, delta in to_base.items():
        torch.testing.assert_close(delta, -current[module], rtol=0, atol=1e-6)


def test_a_childs_difference_to_its_parent_fits_the_rank_cap(tiny_model: Path, tmp_path: Path) -> None:
    """A sleep stacks one expert on its parent's: child - parent has that expert's rank, though the plain
    concatenation (16 + 8) would exceed a cap of 12."""
    from safetensors.torch import save_file as save

    parent = build_random_lora(tiny_model, CACHE / "adapters" / "tiny-one", seed=1)  # rank 8
    new = read_delta(build_random_lora(tiny_model, tmp_path / "new", rank=4, seed=5))
    child = tmp_path / "child"
    child.mkdir()
    tensors = {}
    for module, (a, b) in read_delta(parent).items():
        a_new, b_new = new[module]
        tensors[f"base_model.model.{module}.lora_A.weight"] = torch.cat([a, a_new])
        tensors[f"base_model.model.{module}.lora_B.weight"] = torch.cat([b, b_new], dim=1)
    save(tensors, str(child / "adapter_model.safetensors"))
    (child / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 12, "lora_alpha": 12}')
    diff = read_delta(difference_adapter(child, read_delta(parent), tmp_path / "diff", max_rank=8))
    assert {a.shape[0] for a, _ in diff.values()} == {4}
    for module, delta in dense(diff).items():
        torch.testing.assert_close(delta, dense(new)[module], rtol=0, atol=1e-5)
    with pytest.raises(NotRepresentable):
        difference_adapter(child, read_delta(parent), tmp_path / "too-small", max_rank=3)


def test_dora_is_not_merged(tiny_model: Path, tmp_path: Path) -> None:
    import json
    import shutil

    src = shutil.copytree(CACHE / "adapters" / "tiny-one", tmp_path / "dora")
    config = json.loads((src / "adapter_config.json").read_text()) | {"use_dora": True}
    (src / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(NotMergeable, match="use_dora"):
        merged_model(tiny_model, src, tmp_path / "merged", "k")


def test_auto_serving_mode() -> None:
    assert serving_mode("auto", gpu=False) == "merged"
    assert serving_mode("auto", gpu=True) == "lora"
    assert serving_mode("auto", gpu=False, concurrent_versions=2) == "lora"
    assert serving_mode("merged", gpu=True) == "merged"
    assert serving_mode("lora", gpu=False) == "lora"
