"""OpenAI-compatible endpoints: vLLM's serving objects do the protocol; sleepd adds the session log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from vllm.entrypoints.generate.base.protocol import StreamOptions
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.entrypoints.serve.utils.api_utils import validate_json_request, with_cancellation

from app.adapters import AdapterManager
from app.deps import EngineDep, SessionLogDep
from app.exchange import ExchangeCapture
from app.session_log import SessionLogWriter

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 413, 503)}


@router.post("/v1/chat/completions", dependencies=[Depends(validate_json_request)], responses=_ERRORS)
@with_cancellation
async def create_chat_completion(
    request: ChatCompletionRequest, raw_request: Request, engine: EngineDep, log: SessionLogDep
) -> Response:
    return await _serve("chat", engine.chat.create_chat_completion, request, raw_request, log, engine.adapters)


@router.post("/v1/completions", dependencies=[Depends(validate_json_request)], responses=_ERRORS)
@with_cancellation
async def create_completion(
    request: CompletionRequest, raw_request: Request, engine: EngineDep, log: SessionLogDep
) -> Response:
    return await _serve("completion", engine.completion.create_completion, request, raw_request, log, engine.adapters)


@router.get("/v1/models")
async def list_models(engine: EngineDep) -> JSONResponse:
    """vLLM's model list; the served model's card also names the adapter version now serving it."""
    models = (await engine.models.show_available_models()).model_dump()
    for card in models["data"]:
        card["sleepd_adapter"] = engine.adapters.active.version
    return JSONResponse(models)


async def _serve(
    endpoint: Literal["chat", "completion"],
    handler: Any,
    request: ChatCompletionRequest | CompletionRequest,
    raw_request: Request,
    log: SessionLogWriter,
    adapters: AdapterManager,
) -> Response:
    forward_usage = bool(request.stream_options and request.stream_options.include_usage)
    if request.stream and not forward_usage:
        request.stream_options = StreamOptions(
            include_usage=True,
            continuous_usage_stats=bool(request.stream_options and request.stream_options.continuous_usage_stats),
        )
    # The lease pins the adapter version active now for this whole request, streamed or not.
    lease = adapters.acquire()
    release = _once(lambda: adapters.release(lease))
    raw_request.state.adapter = lease.version
    capture = ExchangeCapture(
        log,
        endpoint=endpoint,
        session_id=raw_request.state.session_id,
        adapter=lease.version,
        request=request,
        request_id=raw_request.headers.get("x-request-id"),
    )
    try:
        result = await handler(request, raw_request)
    except BaseException:
        release()
        raise
    if isinstance(result, ErrorResponse):
        release()
        return JSONResponse(result.model_dump(), status_code=result.error.code)
    if not request.stream:
        release()
        capture.finish_response(result)
        return JSONResponse(result.model_dump())
    return LeasedStream(capture.relay(result, forward_usage=forward_usage), release)


class LeasedStream(StreamingResponse):
    """A stream that returns its adapter lease when the response ends, however it ends (even unstarted)."""

    def __init__(self, content: Any, release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream")
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            fn()

    return run
