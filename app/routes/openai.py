"""OpenAI-compatible endpoints: vLLM's serving objects do the protocol; sleepd adds the session log."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from vllm.entrypoints.generate.base.protocol import StreamOptions
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.entrypoints.serve.utils.api_utils import validate_json_request, with_cancellation

from app.adapters import Ticket, use_lora
from app.deps import EngineDep, SessionLogDep
from app.engine import Engine
from app.errors import AdapterRetired, Unavailable, error_body
from app.exchange import ExchangeCapture
from app.session_log import SessionLogWriter
from app.tenant_routes import TenantUnavailable
from sleepd.keys import DEFAULT_TENANT
from sleepd.registry import BASE

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 413, 503)}


@router.post("/v1/chat/completions", dependencies=[Depends(validate_json_request)], responses=_ERRORS)
@with_cancellation
async def create_chat_completion(
    request: ChatCompletionRequest, raw_request: Request, engine: EngineDep, log: SessionLogDep
) -> Response:
    return await _serve("chat", engine.chat.create_chat_completion, request, raw_request, log, engine)


@router.post("/v1/completions", dependencies=[Depends(validate_json_request)], responses=_ERRORS)
@with_cancellation
async def create_completion(
    request: CompletionRequest, raw_request: Request, engine: EngineDep, log: SessionLogDep
) -> Response:
    return await _serve("completion", engine.completion.create_completion, request, raw_request, log, engine)


@router.get("/v1/models")
async def list_models(engine: EngineDep, raw_request: Request) -> JSONResponse:
    """vLLM's model list; the served model's card also names the adapter version now serving the caller."""
    models = (await engine.models.show_available_models()).model_dump()
    tenant = getattr(raw_request.state, "tenant", DEFAULT_TENANT)
    version = engine.adapters.active.version
    if tenant != DEFAULT_TENANT:
        with contextlib.suppress(TenantUnavailable):
            version, _ = await engine.tenants.lora_for(tenant)
    for card in models["data"]:
        card["sleepd_adapter"] = version
        card["sleepd_merged"] = tenant == DEFAULT_TENANT and engine.adapters.active.lora is None
    return JSONResponse(models)


async def _serve(
    endpoint: Literal["chat", "completion"],
    handler: Any,
    request: ChatCompletionRequest | CompletionRequest,
    raw_request: Request,
    log: SessionLogWriter,
    engine: Engine,
) -> Response:
    forward_usage = bool(request.stream_options and request.stream_options.include_usage)
    if request.stream and not forward_usage:
        request.stream_options = StreamOptions(
            include_usage=True,
            continuous_usage_stats=bool(request.stream_options and request.stream_options.continuous_usage_stats),
        )
    # The ticket pins the adapter version active now for this whole request, streamed or not. Everything after
    # taking it is inside the try: a ticket never returned would pin its version (and a LoRA slot) for good.
    adapters = engine.adapters
    ticket = await adapters.acquire()
    release = _once(lambda: adapters.release(ticket))
    try:
        version = await _tenant_route(engine, ticket, getattr(raw_request.state, "tenant", DEFAULT_TENANT))
        raw_request.state.adapter = version
        capture = ExchangeCapture(
            log,
            endpoint=endpoint,
            session_id=raw_request.state.session_id,
            model=request.model or adapters.served_name,  # "model" is optional in the OpenAI API
            adapter=version,
            request=request,
            request_id=raw_request.headers.get("x-request-id"),
            learn=getattr(raw_request.state, "learn", True),
            tenant=getattr(raw_request.state, "tenant", DEFAULT_TENANT),
            keep=getattr(raw_request.state, "log", True),
        )
        result = await _until_revoked(handler(request, raw_request), ticket)
        if isinstance(result, ErrorResponse):
            release()
            return JSONResponse(result.model_dump(), status_code=result.error.code)
        if not request.stream:
            release()
            capture.finish_response(result)
            return JSONResponse(result.model_dump())
        stream = capture.relay(_revocable(result, ticket), forward_usage=forward_usage)
        return LeasedStream(stream, ticket, release)
    except BaseException:
        release()
        raise


async def _tenant_route(engine: Engine, ticket: Ticket, tenant: str) -> str:
    """Point this request at its tenant's version; returns that version. The ticket still counts the request
    in flight (a weight reload waits for it); only the default tenant follows the ticket's route."""
    adapters = engine.adapters
    if tenant == DEFAULT_TENANT:
        if adapters.keyed() and ticket.route.lora is None and adapters.weights == BASE:
            use_lora(await engine.tenants.base_lora())  # the zero adapter where base rows are unsafe
        return ticket.route.version
    if adapters.weights != BASE:
        # Tenants just appeared and the default's version is still merged into the weights (unmerging now).
        raise Unavailable("per-tenant serving is starting (the engine is reloading its base weights); retry shortly")
    try:
        version, lora = await engine.tenants.lora_for(tenant)
    except TenantUnavailable as exc:
        raise Unavailable(f"this tenant's adapter cannot be served now: {exc}") from exc
    use_lora(lora)
    return version


async def _until_revoked(work: Awaitable[Any], ticket: Ticket) -> Any:
    """`work`'s result, unless the ticket is revoked first (its version outlived the drain deadline)."""
    task = asyncio.ensure_future(work)
    revoked = asyncio.ensure_future(ticket.revoked.wait())
    try:
        await asyncio.wait({task, revoked}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        revoked.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():
        raise AdapterRetired(
            f"adapter version {ticket.route.version} was retired while this request ran past the drain deadline"
        )
    return task.result()


async def _revocable(stream: AsyncIterator[str], ticket: Ticket) -> AsyncIterator[str]:
    """Relay a vLLM SSE stream; once the ticket is revoked, end it with an error event and [DONE]."""
    try:
        async for chunk in stream:
            if ticket.revoked.is_set():
                message = f"adapter version {ticket.route.version} was retired: stream ended at the drain deadline"
                yield f"data: {json.dumps(error_body(message, 'ServiceUnavailableError', 503))}\n\n"
                yield "data: [DONE]\n\n"
                return
            yield chunk
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()  # closes vLLM's generator, which aborts the request in the engine


class LeasedStream(StreamingResponse):
    """A stream that returns its adapter ticket when the response ends, however it ends (even unstarted).
    Revoked, it ends itself with an error event at its next chunk; a reader that stalls is cut off after
    `_REVOKE_GRACE_S` (the connection closes once what was sent is read)."""

    def __init__(self, content: AsyncIterator[str], ticket: Ticket, release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream")
        self._ticket = ticket
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = asyncio.ensure_future(super().__call__(scope, receive, send))
        revoked = asyncio.ensure_future(self._ticket.revoked.wait())
        try:
            await asyncio.wait({body, revoked}, return_when=asyncio.FIRST_COMPLETED)
            if not body.done():
                await asyncio.wait({body}, timeout=_REVOKE_GRACE_S)
            if body.done():
                body.result()
        finally:
            revoked.cancel()
            if not body.done():
                body.cancel()
                with contextlib.suppress(BaseException):
                    await body
            with contextlib.suppress(RuntimeError):  # already finished, or closed by its own task
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            self._release()


_REVOKE_GRACE_S = 2.0


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            fn()

    return run
