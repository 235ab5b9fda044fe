"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.exceptions import RedisError

from app import metrics
from app.errors import error_body

router = APIRouter()
log = logging.getLogger(__name__)


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """Liveness, with what is degraded: 200 while the process can recover by itself ("ok" or "degraded":
    Redis unreachable, sessions spooling, spool full, engine still loading), 503 once the engine has failed
    (a restart is the remedy)."""
    runner = request.app.state.engine_runner
    writer = request.app.state.session_log
    engine = "ready" if runner.engine is not None else ("failed" if runner.error else "loading")
    try:
        redis_up = bool(await asyncio.wait_for(request.app.state.session_store.redis.ping(), 1.0))
    except (RedisError, OSError, TimeoutError):
        redis_up = False
    log_state = "full" if writer.full() else ("spooling" if writer.spool.pending() else "ok")
    degraded = [
        *([] if redis_up else ["redis unreachable"]),
        *([] if log_state == "ok" else [f"session log {log_state}"]),
        *([] if engine == "ready" else [f"engine {engine}"]),
    ]
    body = {
        "status": "failed" if engine == "failed" else ("degraded" if degraded else "ok"),
        "degraded": degraded,
        "engine": engine,
        "redis": "up" if redis_up else "down",
        "session_log": log_state,
    }
    return JSONResponse(body, status_code=503 if engine == "failed" else 200)


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 once the engine serves requests; 503 with the reason before that."""
    runner = request.app.state.engine_runner
    if request.app.state.session_log.full():
        reason = "session log full (Redis unreachable, spool at SLEEPD_SPOOL_MAX_BYTES)"
        return JSONResponse(error_body(reason, "ServiceUnavailableError", 503), status_code=503)
    if runner.engine is not None:
        return JSONResponse({"status": "ready", "model": request.app.state.settings.served_model_name})
    reason = f"engine failed: {runner.error}" if runner.error else "engine loading"
    return JSONResponse(error_body(reason, "ServiceUnavailableError", 503), status_code=503)


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    from app import sleep_metrics

    try:
        await asyncio.to_thread(sleep_metrics.refresh, request.app.state.sync_redis, request.app.state.settings)
    except RedisError:
        pass  # Redis away: serve the rest (sleepd_redis_up says so)
    except Exception:
        # A collector's bug must not take the endpoint (and every other series) down with it.
        log.exception("/metrics: the sleep metrics could not be refreshed")
        metrics.SLEEP_METRICS_ERRORS.inc()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
