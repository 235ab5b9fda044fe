"""The adapter registry: immutable versions, verified content, and atomic publishing even when killed midway."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from safetensors.torch import save_file

from sleepd.registry import AdapterNotFound, AdapterRegistry, InvalidAdapter


def fake_peft(dir: Path, rank: int = 4, mb: int = 1) -> Path:
    """A structurally valid PEFT LoRA folder (the registry checks files, not model math)."""
    import torch

    dir.mkdir(parents=True, exist_ok=True)
    cols = max(1, mb * 1024 * 1024 // 4 // rank)
    save_file({"base_model.model.layer.lora_A.weight": torch.zeros(rank, cols)}, str(dir / "adapter_model.safetensors"))
    (dir / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank, "target_modules": ["q_proj"]}))
    return dir


def test_publish_versions_and_verify(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    a = reg.publish(fake_peft(tmp_path / "a"), base_model="fp", lineage={"sessions": ["s1"]}, gate={"recall": 0.9})
    b = reg.publish(fake_peft(tmp_path / "b", rank=8), base_model="fp", parent=a.version)
    assert (a.version, b.version) == ("v0001", "v0002")
    assert [m.version for m in reg.versions()] == ["v0001", "v0002"]
    assert reg.verify("v0002", base_model="fp", max_rank=8).parent == "v0001"
    assert reg.get("v0001").lineage == {"sessions": ["s1"]} and reg.get("v0001").gate == {"recall": 0.9}
    with pytest.raises(InvalidAdapter, match="max LoRA rank"):
        reg.verify("v0002", max_rank=4)
    with pytest.raises(InvalidAdapter, match="base model"):
        reg.verify("v0001", base_model="other")
    with pytest.raises(AdapterNotFound):
        reg.get("v0009")
    with pytest.raises(AdapterNotFound):
        reg.path("../etc")


def test_corruption_is_detected(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    v = reg.publish(fake_peft(tmp_path / "a"), base_model="fp").version
    f = reg.path(v) / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-8] + b"\1" * 8)
    with pytest.raises(InvalidAdapter, match="hash"):
        reg.verify(v)
    (reg.path(v) / "adapter_config.json").unlink()
    with pytest.raises(InvalidAdapter, match="missing"):
        reg.verify(v)


def test_not_an_adapter_is_refused(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    (tmp_path / "x").mkdir()
    with pytest.raises(InvalidAdapter):
        reg.publish(tmp_path / "x", base_model="fp")
    bad = fake_peft(tmp_path / "y")
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING", "r": 4}))
    with pytest.raises(InvalidAdapter):
        reg.publish(bad, base_model="fp")
    assert reg.versions() == []


@pytest.mark.parametrize("name", ["v0001\n", "v\u0661\u0662\u0663\u0664", "x/v0001", "v001"])
def test_only_plain_version_names_are_versions(tmp_path: Path, name: str) -> None:
    with pytest.raises(AdapterNotFound):
        AdapterRegistry(tmp_path / "reg").path(name)


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    srcs = [fake_peft(tmp_path / f"s{i}") for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda s: reg.publish(s, base_model="fp").version, srcs))
    assert sorted(versions) == [f"v{i:04d}" for i in range(1, 9)]


# A publisher that stops at a chosen point (marker file written, then it waits to be killed): before the final
# rename (files copied, fsync'd: the kill lands mid-publish) or right after it.
_PUBLISH = """
import os, sys, time
from pathlib import Path
import sleepd.registry as registry
root, src, marker, point = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
real_rename = os.rename
def rename(a, b):
    if point == "after":
        real_rename(a, b)
    marker.write_text("here")
    time.sleep(60)
    real_rename(a, b)
registry.os.rename = rename
registry.AdapterRegistry(root).publish(src, base_model="fp")
"""


@pytest.mark.parametrize("point", ["before", "after"])
def test_a_publisher_killed_midway_leaves_old_or_complete_state(tmp_path: Path, point: str) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    reg.publish(fake_peft(tmp_path / "first"), base_model="fp")
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _PUBLISH, str(reg.root), str(fake_peft(tmp_path / "big", mb=8)),
                             str(marker), point])  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the publisher never reached the kill point"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    versions = [m.version for m in reg.versions()]
    if point == "before":
        assert versions == ["v0001"], "a publish killed before its rename must leave no version"
        assert list(reg.root.glob(".tmp-*")), "the kill did not land mid-publish (no temp folder left)"
    else:
        assert versions == ["v0001", "v0002"]
    for v in versions:
        reg.verify(v)  # whatever is visible is complete
    # Leftover temp folders never count as versions, and numbering goes on.
    assert reg.publish(fake_peft(tmp_path / "next"), base_model="fp").version == f"v{len(versions) + 1:04d}"
