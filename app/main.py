"""Wires the Wake server: `create_app(settings)` builds the FastAPI app; its lifespan opens Redis, the session
log writer and the vLLM engine, and closes them in reverse order. Nothing heavy happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis as sync_redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from app.engine import EngineRunner
from app.errors import install_error_handlers
from app.middleware import SleepdMiddleware
from app.routes import adapters, admin, health, openai, sleep, tenants
from app.session_log import SessionLogWriter
from app.spool import Spool
from sleepd.active_adapter import ActiveAdapter
from sleepd.config import Settings
from sleepd.local_redis import check_eviction_policy
from sleepd.registry import AdapterRegistry
from sleepd.session_store import SessionStore
from sleepd.tenants import KeyCache

log = logging.getLogger(__name__)


def redis_client(url: str) -> aioredis.Redis:
    # Short timeouts and one quick retry: when Redis is away the session log should spool within a
    # second or two, not hold records in memory behind long reconnect attempts.
    return aioredis.from_url(
        url,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        health_check_interval=15,
    )


def create_app(settings: Settings, *, start_engine: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = redis_client(settings.redis_url)
        # The sleep admin routes use the worker's (sync) Redis helpers, off the event loop in threads.
        app.state.sync_redis = sync_redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        try:
            await asyncio.to_thread(check_eviction_policy, app.state.sync_redis)  # raises UnsafeRedis
        except (RedisError, OSError):
            pass  # unreachable now: the session log spools; the check runs again at the next start
        store = SessionStore(redis, dedupe_ttl_s=settings.session_dedupe_ttl_s)
        writer = SessionLogWriter(
            store,
            Spool(settings.spool_path, max_bytes=settings.spool_max_bytes),
            queue_size=settings.session_log_queue_size,
            batch=settings.session_log_batch,
            replay_interval_s=settings.spool_replay_interval_s,
            drain_timeout_s=settings.session_log_drain_timeout_s,
        )
        key_cache = KeyCache(redis, settings.data_dir / "apikeys.json", require=settings.require_api_key,
                             refresh_s=settings.api_key_refresh_s)  # fmt: skip
        with contextlib.suppress(RedisError, OSError):
            await key_cache.refresh()  # before the first request: keys created while this server was down count
        app.state.key_cache = key_cache
        keys_task = asyncio.create_task(key_cache.run(), name="api-keys")
        registry = AdapterRegistry(settings.adapters_dir)
        pointer = ActiveAdapter(redis)
        runner = EngineRunner(settings, registry, pointer, key_cache)
        app.state.registry = registry
        app.state.active_adapter = pointer
        app.state.session_store = store
        app.state.session_log = writer
        app.state.engine_runner = runner
        await writer.start()
        if start_engine:
            runner.start()
        try:
            yield
        finally:
            keys_task.cancel()
            await runner.stop()
            await writer.close()
            await redis.aclose()
            app.state.sync_redis.close()

    app = FastAPI(title="sleepd", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.include_router(openai.router)
    app.include_router(admin.router)
    app.include_router(adapters.router)
    app.include_router(sleep.router)
    app.include_router(tenants.router)
    app.include_router(health.router)
    install_error_handlers(app)
    app.add_middleware(SleepdMiddleware, max_request_bytes=settings.max_request_bytes)
    return app
