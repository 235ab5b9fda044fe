"""Admin API for adapters: list versions, activate (roll forward or back), publish an external PEFT adapter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from app.adapters import AdapterBusy, AdapterLoadFailed
from app.deps import AdminAuth, EngineDep
from app.engine import Engine
from app.errors import BadRequest, Conflict, NotFound, Unavailable
from sleepd.active_adapter import ActiveAdapter, PointerConflict
from sleepd.keys import DEFAULT_TENANT
from sleepd.registry import BASE, AdapterNotFound, AdapterRegistry, InvalidAdapter, read_peft_config
from sleepd.tenants import TENANT_NAME

router = APIRouter(prefix="/admin/adapters", dependencies=[AdminAuth])


def _registry(request: Request) -> AdapterRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


def _pointer(request: Request) -> ActiveAdapter:
    return request.app.state.active_adapter  # type: ignore[no-any-return]


RegistryDep = Annotated[AdapterRegistry, Depends(_registry)]
PointerDep = Annotated[ActiveAdapter, Depends(_pointer)]


TenantQuery = Annotated[str, Query(pattern=TENANT_NAME.pattern, description="Whose adapter lineage.")]


class PublishRequest(BaseModel):
    path: str
    activate: bool = False
    tenant: str = Field(DEFAULT_TENANT, pattern=TENANT_NAME.pattern)


@router.get("")
async def list_adapters(
    registry: RegistryDep, pointer: PointerDep, engine: EngineDep, tenant: TenantQuery = DEFAULT_TENANT
) -> dict[str, Any]:
    """A tenant's versions (default: the default tenant's), its active one, and what this server serves."""
    serving = engine.adapters.describe() if tenant == DEFAULT_TENANT else {
        "serving": engine.tenants.good.get(tenant), "tenants": engine.tenants.describe()
    }  # fmt: skip
    return {
        "object": "list",
        "tenant": tenant,
        "active": await pointer.get(tenant),
        **serving,
        "data": [m.model_dump() for m in await asyncio.to_thread(registry.versions, tenant)],
        "history": await pointer.history(20, tenant),
    }


class ActivateRequest(BaseModel):
    expected: str | None = Field(
        None, description="Switch only if this version is active now (default: the one active when called)."
    )


@router.post("/{version}/activate")
async def activate(
    version: str, pointer: PointerDep, engine: EngineDep, registry: RegistryDep, body: ActivateRequest | None = None,
    tenant: TenantQuery = DEFAULT_TENANT,
) -> dict[str, Any]:  # fmt: skip
    """Switch every server to `version` (or `base`): this one first, so a bad version never reaches the pointer;
    then one compare-and-set on the pointer, so two writers at once cannot both think they won. For a tenant
    other than the default, the version must be that tenant's and verify (files, hash, base model, rank)."""
    if tenant != DEFAULT_TENANT:
        expected = body.expected if body and body.expected else await pointer.get(tenant)
        if version != BASE:
            await _verify_for(registry, engine, version, tenant)
        event = await _move_pointer(pointer, version, expected, "admin", tenant)
        return {"active": version, "previous": event["previous"], "tenant": tenant}
    async with engine.adapters.switching:
        expected = body.expected if body and body.expected else await pointer.get()
        await _activate_here(engine, version)
        event = await _move_pointer(pointer, version, expected, "admin")
    return {"active": version, "previous": event["previous"]}


@router.post("")
async def publish(
    body: PublishRequest, registry: RegistryDep, pointer: PointerDep, engine: EngineDep
) -> dict[str, Any]:
    """Register an adapter trained elsewhere (a PEFT LoRA folder on this host) as the next version."""
    path = await asyncio.to_thread(Path(body.path).resolve)
    try:
        config = await asyncio.to_thread(read_peft_config, path)
    except InvalidAdapter as exc:
        raise BadRequest(str(exc), param="path") from exc
    if config["r"] > engine.adapters.max_rank:
        raise BadRequest(
            f"rank {config['r']} exceeds the engine's max LoRA rank {engine.adapters.max_rank}", param="path"
        )
    try:
        await engine.adapters.check_loadable(str(path))
    except InvalidAdapter as exc:
        raise BadRequest(str(exc), param="path") from exc
    except AdapterBusy as exc:
        raise Conflict(str(exc)) from exc
    parent = await pointer.get(body.tenant)
    meta = await asyncio.to_thread(
        registry.publish,
        path,
        base_model=engine.adapters.base_model,
        parent=None if parent == BASE else parent,
        lineage={"external_path": str(path)},
        source="external",
        tenant=body.tenant,
    )
    if body.activate and body.tenant != DEFAULT_TENANT:
        await _move_pointer(pointer, meta.version, parent, "admin publish", body.tenant)
    elif body.activate:
        async with engine.adapters.switching:
            await _activate_here(engine, meta.version)
            await _move_pointer(pointer, meta.version, parent, "admin publish")
    return meta.model_dump()


async def _verify_for(registry: AdapterRegistry, engine: Engine, version: str, tenant: str) -> None:
    try:
        meta = await asyncio.to_thread(registry.verify, version, engine.adapters.base_model, engine.adapters.max_rank)
    except AdapterNotFound as exc:
        raise NotFound(str(exc), param="version") from exc
    except InvalidAdapter as exc:
        raise BadRequest(str(exc), param="version") from exc
    if meta.tenant != tenant:
        raise NotFound(f"no adapter version {version!r} for tenant {tenant!r}", param="version")


async def _move_pointer(
    pointer: ActiveAdapter, version: str, expected: str, reason: str, tenant: str = DEFAULT_TENANT
) -> dict[str, Any]:
    try:
        return await pointer.set(version, expected=expected, reason=reason, tenant=tenant)
    except PointerConflict as exc:
        raise Conflict(f"{exc}; nothing changed (this server follows the pointer back)") from exc


async def _activate_here(engine: Engine, version: str) -> None:
    try:
        await engine.adapters.activate(version)
    except AdapterNotFound as exc:
        raise NotFound(str(exc), param="version") from exc
    except AdapterBusy as exc:
        raise Conflict(str(exc)) from exc
    except InvalidAdapter as exc:
        raise BadRequest(str(exc), param="version") from exc
    except AdapterLoadFailed as exc:
        raise Unavailable(f"{exc}; the version stays as it was, retry later") from exc
