"""ASGI middleware for the OpenAI routes: request size limit, session id, sleepd response headers, metrics.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched and cancellation propagates.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import error_body
from sleepd.tenants import AuthError

SESSION_HEADER = "x-session-id"
ADAPTER_HEADER = "x-sleepd-adapter"
LEARN_HEADER = "x-sleepd-learn"  # "off": log the exchange for audit, never consolidate it
_SESSION_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completion", "/v1/models": "models"}


def new_session_id() -> str:
    return f"sess_{uuid.uuid4().hex}"


class SleepdMiddleware:
    def __init__(self, app: ASGIApp, max_request_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(("/v1/", "/admin/")):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        endpoint = _ENDPOINTS.get(scope["path"], "admin" if scope["path"].startswith("/admin/") else "other")
        status = {"code": 500}

        async def send_json(code: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> None:
            payload = json.dumps(body).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            await send({"type": "http.response.start", "status": code, "headers": headers + extra})
            await send({"type": "http.response.body", "body": payload})
            status["code"] = code

        try:
            state = scope.setdefault("state", {})
            sid = _header(scope, SESSION_HEADER.encode())
            if sid is None:
                sid = new_session_id()
            elif not _SESSION_ID.fullmatch(sid):
                msg = "X-Session-Id must be 1-128 characters of letters, digits and . _ : @ -"
                await send_json(400, error_body(msg, "BadRequestError", 400, "X-Session-Id"), [])
                return
            state["session_id"] = sid
            learn = (_header(scope, LEARN_HEADER.encode()) or "on").strip().lower()
            if learn not in ("on", "off"):
                msg = "X-Sleepd-Learn must be 'on' or 'off'"
                await send_json(400, error_body(msg, "BadRequestError", 400, "X-Sleepd-Learn"), [])
                return
            # Who is calling (API keys, when configured) decides whose memory this exchange joins and whether it
            # is learned, logged for audit only, or not logged. Checked before the body is read: a refused
            # request leaves no record.
            app_state = getattr(scope.get("app"), "state", None)
            keys = getattr(app_state, "key_cache", None) if scope["path"].startswith("/v1/") else None
            if keys is not None:
                try:
                    caller = keys.caller(_header(scope, b"authorization"), learn == "on")
                except AuthError as exc:
                    metrics.AUTH_REFUSED.labels(exc.code).inc()
                    body = error_body(str(exc), "AuthenticationError", 401)
                    body["error"]["code"] = exc.code
                    await send_json(401, body, [(b"www-authenticate", b"Bearer")])
                    return
                state["tenant"], state["learn"], state["log"] = caller.tenant, caller.learn, caller.log
                state["key_id"] = caller.key_id
                if caller.key_id is not None:
                    consent = "learn" if caller.learn else "audit" if caller.log else "drop"
                    metrics.TENANT_REQUESTS.labels(caller.tenant, consent).inc()
            else:
                state["learn"] = learn == "on"

            body_receive = await self._bounded_body(scope, receive)
            if body_receive is None:
                msg = f"request body exceeds {self.max_request_bytes} bytes"
                await send_json(413, error_body(msg, "RequestTooLargeError", 413), [])
                return

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    headers = list(message.get("headers", []))
                    headers.append((SESSION_HEADER.encode(), sid.encode()))
                    headers.append((ADAPTER_HEADER.encode(), str(state.get("adapter", "base")).encode()))
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, body_receive, send_with_headers)
        finally:
            metrics.REQUESTS.labels(endpoint, str(status["code"])).inc()
            metrics.LATENCY_BY_VERSION.observe(metrics.REQUEST_LATENCY, endpoint, str(state.get("adapter", "none")),
                                               time.perf_counter() - start)  # fmt: skip

    async def _bounded_body(self, scope: Scope, receive: Receive) -> Receive | None:
        """Read the body up to the limit; None if it is larger. Returns a receive that replays it."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_request_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_request_bytes:
                return None
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client's disconnect, as Starlette expects

        return replay


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None
