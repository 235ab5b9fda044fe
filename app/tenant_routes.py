"""Per-tenant serving: each request runs on its own tenant's active adapter version, never another's.

The default tenant (single-tenant deployments, and the shared memory) is served by `AdapterManager`
(app/adapters.py: hot swap, merged weights). Every other tenant's version is a LoRA request that vLLM loads on
demand: its engine keeps `max_loras` adapters in a batch and an LRU of them in memory, so many tenants' versions
are served at once and one evicted is reloaded from the registry at its next request. Each LoRA name carries
the tenant, the version and its content hash (never reused for other weights); a version's requests keep the
LoRA they started with, so a tenant's swap or rollback never changes a request in flight.

Privacy rules held here:
- a version is served only to the tenant its metadata names (a pointer set wrongly cannot leak a memory);
- while tenants exist the engine's weights stay the base model's (AdapterManager unmerges); a tenant with no
  version runs without a LoRA, or on a zero adapter where vLLM's own CPU ops are kept (their last-slot bug
  would hand those rows another tenant's delta: app/cpu_lora.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import merging, metrics
from app.adapters import follow_pointer
from sleepd import keys
from sleepd.active_adapter import ActiveAdapter
from sleepd.registry import BASE, AdapterRegistry, RegistryError

log = logging.getLogger(__name__)


class TenantUnavailable(Exception):
    """The tenant's version cannot be served now (and it has no earlier good one here)."""


class TenantRoutes:
    def __init__(
        self,
        engine_client: Any,
        registry: AdapterRegistry,
        pointer: ActiveAdapter,
        *,
        served_name: str,
        base_model: str,
        model_path: str,
        max_rank: int,
        work_dir: Path,
        take_id: Callable[[], int],
        refresh_s: float = 2.0,
        zero_for_base: bool = False,
    ) -> None:
        self.client = engine_client
        self.registry = registry
        self.pointer = pointer
        self.served_name = served_name
        self.base_model = base_model
        self.model_path = model_path
        self.max_rank = max_rank
        self.work_dir = work_dir
        self.take_id = take_id
        self.refresh_s = refresh_s
        self.versions: dict[str, str] = {}  # tenant -> version its pointer names (as last read)
        self.loras: dict[tuple[str, str], Any] = {}  # (tenant, version) -> LoRARequest
        self.good: dict[str, str] = {}  # tenant -> last version served to it here
        self.failed: dict[tuple[str, str], tuple[float, str]] = {}  # (tenant, version) -> (retry at, why)
        # A zero adapter for base rows, only where rows without a LoRA would get another's delta (app/cpu_lora.py).
        self.zero_for_base = zero_for_base
        self._zero: Any = None
        self._task: asyncio.Task[None] | None = None

    async def base_lora(self) -> Any:
        """What serves the base model to a tenant: no LoRA, or where that is unsafe a zero-delta LoRA (built once)."""
        if not self.zero_for_base:
            return None
        if self._zero is None:
            from vllm.lora.request import LoRARequest

            path = await asyncio.to_thread(merging.zero_adapter, Path(self.model_path), self.work_dir / "zero")
            self._zero = LoRARequest(f"{self.served_name}-base-zero", self.take_id(), str(path))
        return self._zero

    async def lora_for(self, tenant: str) -> tuple[str, Any]:
        """(version, LoRARequest) to serve `tenant`'s request with now."""
        version = self.versions.get(tenant)
        if version is None:
            version = self.versions[tenant] = await self.pointer.get(tenant)
        try:
            return version, await self._lora(tenant, version)
        except TenantUnavailable:
            previous = self.good.get(tenant)
            if previous is None or previous == version:
                raise
            return previous, await self._lora(tenant, previous)

    async def _lora(self, tenant: str, version: str) -> Any:
        if version == BASE:
            self.good[tenant] = BASE
            return await self.base_lora()
        lora = self.loras.get((tenant, version))
        if lora is not None:
            return lora
        failed = self.failed.get((tenant, version))
        if failed and time.monotonic() < failed[0]:
            raise TenantUnavailable(failed[1])
        from vllm.lora.request import LoRARequest

        try:
            meta = await asyncio.to_thread(self.registry.verify, version, self.base_model, self.max_rank)
            if meta.tenant != tenant:
                raise RegistryError(f"{version} belongs to tenant {meta.tenant!r}, not {tenant!r}: never served here")
        except (RegistryError, OSError) as exc:
            self.failed[(tenant, version)] = (time.monotonic() + 10.0, str(exc))
            metrics.ADAPTER_REJECTIONS.labels("tenant").inc()
            log.error("tenant %s: version %s cannot be served: %s", tenant, version, exc)
            raise TenantUnavailable(str(exc)) from exc
        name = f"{self.served_name}-{tenant}-{version}-{meta.content_hash[:12]}"
        lora = LoRARequest(name, self.take_id(), str(self.registry.path(version)))
        self.loras[(tenant, version)] = lora
        self.good[tenant] = version
        return lora

    async def refresh(self) -> None:
        """Re-read the pointers of the tenants served here (one MGET)."""
        tenants = list(self.versions)
        if not tenants:
            return
        values = await self.pointer.redis.mget([keys.adapter_active(t) for t in tenants])
        for tenant, value in zip(tenants, values, strict=True):
            self.versions[tenant] = value.decode() if isinstance(value, bytes) else (value or BASE)

    async def forget(self, versions: set[str]) -> None:
        """Drop purged versions (erasure) from this server: their LoRAs leave the engine."""
        for key in [k for k in self.loras if k[1] in versions]:
            lora = self.loras.pop(key)
            with contextlib.suppress(Exception):
                await self.client.remove_lora(lora.lora_int_id)
        for tenant in [t for t, v in self.good.items() if v in versions]:
            del self.good[tenant]

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tenant-routes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _loop(self) -> None:
        async def step(purged: set[str]) -> None:
            if purged:
                await self.forget(purged)
            await self.refresh()

        await follow_pointer(self.pointer.redis, self.refresh_s, step, "tenant routes")

    def describe(self) -> dict[str, Any]:
        return {t: {"pointer": v, "serving": self.good.get(t)} for t, v in sorted(self.versions.items())}
