"""Admin API for tenants: API keys (create, list, revoke), the tenants and their memory, and erasure."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import redis
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from app.deps import AdminAuth, SettingsDep
from app.errors import BadRequest, NotFound
from sleepd import keys
from sleepd.active_adapter import read_active
from sleepd.erasure import erase_session, tenant_sessions
from sleepd.jobs import JobStore
from sleepd.keys import DEFAULT_TENANT
from sleepd.sleep_queue import enqueue_erasure
from sleepd.tenants import TENANT_NAME, InvalidTenant, KeyStore, check_tenant, key_info, tenants

router = APIRouter(prefix="/admin", dependencies=[AdminAuth])

TenantPath = Annotated[str, Path(pattern=TENANT_NAME.pattern)]


def _client(request: Request) -> redis.Redis:
    return request.app.state.sync_redis  # type: ignore[no-any-return]


class KeyRequest(BaseModel):
    tenant: str = Field(description="The tenant the key belongs to: its sessions build that tenant's memory.")
    name: str = Field("", max_length=200)
    learn: bool = Field(True, description="Consolidate this key's sessions (a request can still opt out).")
    opted_out: Literal["audit", "drop"] = Field(
        "audit", description="Exchanges not to be learned: logged for audit (never consolidated), or not logged."
    )


@router.post("/keys")
async def create_key(body: KeyRequest, request: Request) -> dict[str, Any]:
    """A new API key. The secret is in this response only; sleepd keeps its SHA-256."""
    try:
        check_tenant(body.tenant)
    except InvalidTenant as exc:
        raise BadRequest(str(exc), param="tenant") from exc
    store = KeyStore(_client(request))
    secret, key = await asyncio.to_thread(
        store.create, body.tenant, name=body.name, learn=body.learn, opted_out=body.opted_out
    )
    await _reload_keys(request)
    return {"key": secret, **key_info(key)}


@router.get("/keys")
async def list_keys(request: Request, tenant: Annotated[str | None, Query()] = None) -> dict[str, Any]:
    found = await asyncio.to_thread(KeyStore(_client(request)).list, tenant)
    return {"object": "list", "data": [key_info(k) for k in found]}


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: Annotated[str, Path(max_length=64)], request: Request) -> dict[str, Any]:
    """Revoke a key: requests with it get 401 (on this server at once, on the others within
    SLEEPD_API_KEY_REFRESH_S) and leave no record."""
    key = await asyncio.to_thread(KeyStore(_client(request)).revoke, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id!r}", param="key_id")
    await _reload_keys(request)
    return key_info(key)


async def _reload_keys(request: Request) -> None:
    cache = request.app.state.key_cache
    cache.forget()
    await cache.refresh()


@router.get("/tenants")
async def list_tenants(request: Request) -> dict[str, Any]:
    """Every tenant with its active adapter version and its keys."""
    client = _client(request)

    def collect() -> list[dict[str, Any]]:
        all_keys = KeyStore(client).list()
        return [
            {
                "tenant": t,
                "active": read_active(client, t),
                "keys": sum(1 for k in all_keys if k.tenant == t and k.active),
                "sessions": int(client.zcard(keys.session_index(t))),  # type: ignore[arg-type]
            }
            for t in tenants(client)
        ]

    return {"object": "list", "keyed": request.app.state.key_cache.keyed, "data": await asyncio.to_thread(collect)}


@router.delete("/sessions/{session_id}")
async def erase_one(
    session_id: Annotated[str, Path(max_length=128)],
    request: Request,
    settings: SettingsDep,
    tenant: Annotated[str, Query(pattern=TENANT_NAME.pattern)] = DEFAULT_TENANT,
) -> dict[str, Any]:
    """Erase a session: its records leave Redis now; the erase job removes it from snapshots and archives,
    rebuilds the tenant's adapter lineage without it and purges every version that learned from it."""
    client = _client(request)
    removed = await asyncio.to_thread(erase_session, client, tenant, session_id)
    job_id = await asyncio.to_thread(enqueue_erasure, client, tenant, settings)
    return {"object": "erasure", "tenant": tenant, "sessions": [session_id], "records_deleted": removed,
            "job_id": job_id, "state": "queued" if job_id else "pending"}  # fmt: skip


@router.delete("/tenants/{tenant}/sessions")
async def erase_tenant(tenant: TenantPath, request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Erase every session of a tenant and every adapter version of its lineage (back to the base model)."""
    client = _client(request)

    def run() -> tuple[list[str], int]:
        sessions = tenant_sessions(client, tenant)
        return sessions, sum(erase_session(client, tenant, s) for s in sessions)

    sessions, removed = await asyncio.to_thread(run)
    job_id = await asyncio.to_thread(enqueue_erasure, client, tenant, settings, True)
    return {"object": "erasure", "tenant": tenant, "sessions": sessions, "records_deleted": removed,
            "job_id": job_id, "state": "queued" if job_id else "pending"}  # fmt: skip


@router.get("/erasures/{job_id}")
async def erasure_status(job_id: str, request: Request) -> dict[str, Any]:
    job = await asyncio.to_thread(JobStore(_client(request)).get, job_id)
    if job is None:
        raise NotFound(f"no erase job {job_id!r}", param="job_id")
    return job
