"""The adapter registry on disk: versioned, immutable LoRA adapters with their metadata and lineage.

Each version is a folder `<root>/<version>/` holding an ordinary PEFT adapter (`adapter_config.json`,
`adapter_model.safetensors`) plus `sleepd_adapter.json` (version, parent, experts and ranks, lineage, gate
metrics, content hash, created_at). Publishing writes everything into a temp folder, fsyncs it, and renames
it into place: a crash leaves either no version or a complete one. Which version is *active* lives in Redis
(`sleepd/active_adapter.py`); this module imports no Redis so `consolidation/` can use it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from sleepd.durable import fsync_path

META_FILE = "sleepd_adapter.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
BASE = "base"  # the name of "no adapter"
_VERSION = re.compile(r"v([0-9]{4,})")


class RegistryError(Exception):
    pass


class AdapterNotFound(RegistryError):
    pass


class InvalidAdapter(RegistryError):
    """Not a usable PEFT LoRA adapter, or not for this base model, or corrupt (hash mismatch)."""


class Expert(BaseModel):
    """One low-rank expert inside a served adapter (each sleep adds one; earlier ones stay frozen)."""

    rank: int
    source: str = ""  # the version or sleep that trained it


class AdapterMeta(BaseModel):
    version: str
    parent: str | None = None
    base_model: str = Field(description="fingerprint of the base model the adapter was made for")
    rank: int
    target_modules: list[str]
    experts: list[Expert] = Field(default_factory=list)
    lineage: dict[str, Any] = Field(default_factory=dict)
    gate: dict[str, Any] = Field(default_factory=dict)
    source: Literal["sleep", "external"] = "sleep"
    # Whose memory this version is: served only to that tenant's requests, built only on that tenant's lineage.
    tenant: str = "default"
    content_hash: str
    created_at: float = Field(default_factory=time.time)


def base_model_fingerprint(model_dir: str | Path) -> str:
    """Identifies a base model by its architecture config (what decides whether an adapter fits it)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    keep = {k: v for k, v in config.items() if not k.startswith("_") and k not in ("transformers_version", "dtype")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def read_peft_config(adapter_dir: Path) -> dict[str, Any]:
    for name in ADAPTER_FILES:
        if not (adapter_dir / name).is_file():
            raise InvalidAdapter(f"{adapter_dir}: missing {name}")
    try:
        config: dict[str, Any] = json.loads((adapter_dir / "adapter_config.json").read_text())
    except ValueError as exc:
        raise InvalidAdapter(f"{adapter_dir}: adapter_config.json is not JSON ({exc})") from exc
    if config.get("peft_type", "LORA") != "LORA":
        raise InvalidAdapter(f"{adapter_dir}: peft_type {config.get('peft_type')!r} is not LORA")
    if not isinstance(config.get("r"), int) or config["r"] < 1:
        raise InvalidAdapter(f"{adapter_dir}: adapter_config.json has no valid rank 'r'")
    return config


def content_hash(adapter_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ADAPTER_FILES:
        h.update(name.encode() + b"\0")
        with open(adapter_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def target_modules(config: dict[str, Any]) -> list[str]:
    mods = config.get("target_modules") or []
    return sorted([mods] if isinstance(mods, str) else mods)


class AdapterRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, version: str) -> Path:
        if not _VERSION.fullmatch(version):
            raise AdapterNotFound(f"{version!r} is not an adapter version")
        return self.root / version

    def get(self, version: str) -> AdapterMeta:
        meta = self.path(version) / META_FILE
        if not meta.is_file():
            raise AdapterNotFound(f"no adapter version {version!r}")
        return AdapterMeta.model_validate_json(meta.read_text())

    def versions(self, tenant: str | None = None) -> list[AdapterMeta]:
        found = [p.name for p in self.root.iterdir() if _VERSION.fullmatch(p.name) and (p / META_FILE).is_file()]
        metas = [self.get(v) for v in sorted(found, key=lambda v: int(v[1:]))]
        return [m for m in metas if tenant is None or m.tenant == tenant]

    def purge(self, version: str) -> bool:
        """Delete a version's files for good (erasure). Renamed away first, so no reader ever sees it half-gone;
        its number is never reused (numbering takes the highest folder, and a tombstone file keeps it)."""
        path = self.path(version)
        if not path.exists():
            return False
        with self._lock():
            gone = self.root / f".purged-{version}-{uuid.uuid4().hex[:6]}"
            os.rename(path, gone)
            (self.root / f"{version}.purged").touch()
            fsync_path(self.root)
        shutil.rmtree(gone, ignore_errors=True)
        return True

    def verify(self, version: str, base_model: str | None = None, max_rank: int | None = None) -> AdapterMeta:
        """The adapter as stored: its files parse, match their hash, fit the base model and the rank cap."""
        meta = self.get(version)
        path = self.path(version)
        config = read_peft_config(path)
        if content_hash(path) != meta.content_hash:
            raise InvalidAdapter(f"{version}: content hash mismatch (files changed or corrupt)")
        if base_model is not None and meta.base_model != base_model:
            raise InvalidAdapter(f"{version}: made for base model {meta.base_model}, serving {base_model}")
        if max_rank is not None and config["r"] > max_rank:
            raise InvalidAdapter(f"{version}: rank {config['r']} exceeds the engine's max LoRA rank {max_rank}")
        return meta

    def publish(
        self,
        adapter_dir: Path,
        *,
        base_model: str,
        parent: str | None = None,
        experts: list[Expert] | None = None,
        lineage: dict[str, Any] | None = None,
        gate: dict[str, Any] | None = None,
        source: Literal["sleep", "external"] = "sleep",
        tenant: str = "default",
    ) -> AdapterMeta:
        """Copy a PEFT adapter folder in as the next version, atomically. Returns its metadata."""
        config = read_peft_config(adapter_dir)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for name in ADAPTER_FILES:
                shutil.copyfile(adapter_dir / name, tmp / name)
            with self._lock():
                version = self._next_version()
                meta = AdapterMeta(
                    version=version,
                    parent=parent,
                    base_model=base_model,
                    rank=config["r"],
                    target_modules=target_modules(config),
                    experts=experts or [Expert(rank=config["r"], source=version)],
                    lineage=lineage or {},
                    gate=gate or {},
                    source=source,
                    tenant=tenant,
                    content_hash=content_hash(tmp),
                )
                (tmp / META_FILE).write_text(meta.model_dump_json(indent=2))
                for name in (*ADAPTER_FILES, META_FILE):
                    fsync_path(tmp / name)
                fsync_path(tmp)
                os.rename(tmp, self.root / version)
                fsync_path(self.root)
            return meta
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _next_version(self) -> str:
        numbers = [
            int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION.fullmatch(p.name.removesuffix(".purged")))
        ]
        return f"v{max(numbers, default=0) + 1:04d}"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # Serialises version numbering between processes sharing the registry folder.
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
