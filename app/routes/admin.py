"""Admin read side of the session log (bearer SLEEPD_ADMIN_TOKEN)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.deps import AdminAuth, SessionStoreDep
from app.errors import NotFound
from sleepd.keys import DEFAULT_TENANT
from sleepd.tenants import TENANT_NAME

router = APIRouter(prefix="/admin", dependencies=[AdminAuth])


TenantQuery = Annotated[str, Query(pattern=TENANT_NAME.pattern, description="Whose sessions (default: 'default').")]


@router.get("/sessions")
async def list_exchanges(
    store: SessionStoreDep,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    tenant: TenantQuery = DEFAULT_TENANT,
) -> dict[str, Any]:
    """A tenant's recent exchanges, newest first; with `session_id`, that session's latest ones."""
    if session_id:
        rows = list(reversed(await store.session(session_id, limit=limit, tenant=tenant)))
    else:
        rows = await store.recent(limit, tenant=tenant)
    return {
        "object": "list",
        "data": [{"id": eid, **rec.model_dump()} for eid, rec in rows],
        "total": await store.count(tenant),
    }


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, store: SessionStoreDep, tenant: TenantQuery = DEFAULT_TENANT) -> dict[str, Any]:
    """Every exchange of one session, oldest first."""
    rows = await store.session(session_id, tenant=tenant)
    if not rows:
        raise NotFound(f"no session {session_id!r}", param="session_id")
    return {
        "object": "session",
        "id": session_id,
        "exchanges": [{"id": eid, **rec.model_dump()} for eid, rec in rows],
    }
