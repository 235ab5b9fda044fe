"""The one error shape of the API, OpenAI's: {"error": {"message", "type", "param", "code"}}.

sleepd's own failures raise a `SleepdError`; vLLM's protocol errors go through vLLM's own handlers, which
produce the same shape. Streams that fail midway end with an error event and `[DONE]` (vLLM does that).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
from vllm.entrypoints.serve.exception_handling.handlers.http import http_exception_handler
from vllm.entrypoints.serve.exception_handling.handlers.validation import validation_exception_handler
from vllm.v1.engine.exceptions import EngineDeadError

log = logging.getLogger(__name__)


class SleepdError(Exception):
    status_code = 500
    error_type = "InternalServerError"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadRequest(SleepdError):
    status_code = 400
    error_type = "BadRequestError"


class Unauthorized(SleepdError):
    status_code = 401
    error_type = "AuthenticationError"


class Forbidden(SleepdError):
    status_code = 403
    error_type = "PermissionDeniedError"


class NotFound(SleepdError):
    status_code = 404
    error_type = "NotFoundError"


class Conflict(SleepdError):
    status_code = 409
    error_type = "ConflictError"


class PayloadTooLarge(SleepdError):
    status_code = 413
    error_type = "RequestTooLargeError"


class Unavailable(SleepdError):
    status_code = 503
    error_type = "ServiceUnavailableError"


class EngineNotReady(Unavailable):
    pass


class AdapterRetired(Unavailable):
    """The adapter version a request started on was retired and the request outlived the drain deadline."""


def stop_process(reason: str) -> None:
    """Not recoverable in-process: stop so that the supervisor (sleepd up, systemd, k8s) restarts us."""
    log.critical("shutting down: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)


def error_body(message: str, error_type: str, code: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(exc: SleepdError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        error_body(exc.message, exc.error_type, exc.status_code, exc.param),
        status_code=exc.status_code,
        headers=headers,
    )


async def _sleepd_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SleepdError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return error_response(exc, headers)


async def _engine_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """vLLM's errors (VLLMError, its ValueErrors) carry their own status; the rest maps to 500."""
    if isinstance(exc, EngineDeadError):
        stop_process(f"vLLM engine died: {exc}")
    elif not isinstance(exc, ValueError):
        log.exception("unhandled error", exc_info=exc)
    err = create_error_response(exc)
    return JSONResponse(err.model_dump(), status_code=err.error.code)


def install_error_handlers(app: FastAPI) -> None:
    # vLLM's framework-error handlers give validation errors clear messages; they read this one flag.
    app.state.args = argparse.Namespace(log_error_stack=False)
    app.add_exception_handler(HTTPException, http_exception_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_exception_handler)  # type: ignore[arg-type]
    app.add_exception_handler(SleepdError, _sleepd_error_handler)
    app.add_exception_handler(Exception, _engine_error_handler)
