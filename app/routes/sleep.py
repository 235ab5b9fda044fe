"""Admin API for sleep cycles: trigger one, watch it, list past ones. The worker does the work (Celery)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from app.deps import AdminAuth, SettingsDep
from app.errors import BadRequest, Conflict, NotFound
from sleepd import keys
from sleepd.keys import DEFAULT_TENANT
from sleepd.tenants import InvalidTenant, check_tenant

router = APIRouter(prefix="/admin/sleep", dependencies=[AdminAuth])


class SleepRequest(BaseModel):
    force: bool = Field(False, description="Start now even outside a low-traffic window or on a busy GPU.")
    steps: int | None = Field(None, ge=1, le=10_000, description="Knowledge Seeding steps (default: setting).")
    dream_rounds: int | None = Field(None, ge=0, le=100)
    rank: int | None = Field(None, ge=1, le=256)
    tenant: str = Field(DEFAULT_TENANT, description="Whose sessions to consolidate into whose adapter lineage.")


def _client(request: Request) -> redis.Redis:
    return request.app.state.sync_redis  # type: ignore[no-any-return]


@router.post("")
async def trigger(body: SleepRequest, request: Request, settings: SettingsDep) -> dict[str, Any]:
    from sleepd.sleep_queue import enqueue
    from sleepd.window import decide

    client = _client(request)
    try:
        check_tenant(body.tenant)
    except InvalidTenant as exc:
        raise BadRequest(str(exc), param="tenant") from exc
    if not body.force:
        decision = await asyncio.to_thread(decide, client, settings, None, body.tenant)
        if not decision.sleep:
            raise Conflict("not a good time to sleep (send force=true to override): " + "; ".join(decision.reasons))
    options = {k: v for k, v in body.model_dump().items() if v is not None} | {"trigger": "admin"}
    job_id = await asyncio.to_thread(enqueue, client, options, settings)
    if job_id is None:
        active: Any = await asyncio.to_thread(client.get, keys.SLEEP_ACTIVE)
        raise Conflict(f"a sleep cycle is already queued or running: {active.decode() if active else '?'}")
    return {"job_id": job_id, "state": "queued"}


@router.get("/{job_id}")
async def status(job_id: str, request: Request) -> dict[str, Any]:
    from sleepd.jobs import JobStore

    job = await asyncio.to_thread(JobStore(_client(request)).get, job_id)
    if job is None:
        raise NotFound(f"no sleep job {job_id!r}", param="job_id")
    return _with_eta(job)


@router.get("/{job_id}/report", response_class=HTMLResponse)
async def report(job_id: str, request: Request) -> HTMLResponse:
    """The cycle on one page: phase timings, the gate against its limits, held-out answers before and after,
    the lineage."""
    from sleepd.jobs import JobStore
    from sleepd.registry import AdapterRegistry
    from sleepd.sleep_report import build, render_html

    job = await asyncio.to_thread(JobStore(_client(request)).get, job_id)
    if job is None:
        raise NotFound(f"no sleep job {job_id!r}", param="job_id")
    tenant = str((job.get("options") or {}).get("tenant", DEFAULT_TENANT))
    registry: AdapterRegistry = request.app.state.registry
    adapters = [m.model_dump() for m in await asyncio.to_thread(registry.versions, tenant)]
    return HTMLResponse(render_html(build(job, adapters)))


@router.get("")
async def history(request: Request, limit: int = 50) -> dict[str, Any]:
    from sleepd.jobs import JobStore

    jobs = await asyncio.to_thread(JobStore(_client(request)).recent, min(max(limit, 1), 500))
    return {"object": "list", "data": [_with_eta(j) for j in jobs]}


def _with_eta(job: dict[str, Any]) -> dict[str, Any]:
    """Linear ETA from progress so far (rough: phases differ in speed)."""
    progress, started = float(job.get("progress") or 0), job.get("started_at")
    if job.get("state") == "running" and started and 0.02 < progress < 1:
        elapsed = time.time() - float(started)
        job["eta_s"] = round(elapsed * (1 - progress) / progress, 1)
    return job
