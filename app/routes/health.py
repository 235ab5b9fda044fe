"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.exceptions import RedisError

from app.errors import error_body

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (the engine may still be loading)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 once the engine serves requests; 503 with the reason before that."""
    runner = request.app.state.engine_runner
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
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
