"""Admin read side of the session log (bearer SLEEPD_ADMIN_TOKEN)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.deps import AdminAuth, SessionStoreDep
from app.errors import NotFound

router = APIRouter(prefix="/admin", dependencies=[AdminAuth])


@router.get("/sessions")
async def list_exchanges(
    store: SessionStoreDep,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Recent exchanges, newest first; with `session_id`, that session's latest ones."""
    if session_id:
        rows = list(reversed(await store.session(session_id, limit=limit)))
    else:
        rows = await store.recent(limit)
    return {
        "object": "list",
        "data": [{"id": eid, **rec.model_dump()} for eid, rec in rows],
        "total": await store.count(),
    }


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, store: SessionStoreDep) -> dict[str, Any]:
    """Every exchange of one session, oldest first."""
    rows = await store.session(session_id)
    if not rows:
        raise NotFound(f"no session {session_id!r}", param="session_id")
    return {
        "object": "session",
        "id": session_id,
        "exchanges": [{"id": eid, **rec.model_dump()} for eid, rec in rows],
    }
