"""FastAPI dependencies: the services on app.state, reached through Annotated aliases; admin auth."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app import metrics
from app.engine import Engine
from app.errors import Forbidden, Unauthorized, Unavailable
from app.session_log import SessionLogWriter
from sleepd.config import Settings
from sleepd.session_store import SessionStore


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _engine(request: Request) -> Engine:
    return request.app.state.engine_runner.get()  # type: ignore[no-any-return]


def _session_log(request: Request) -> SessionLogWriter:
    writer: SessionLogWriter = request.app.state.session_log
    if writer.full():
        metrics.SESSION_LOG_REFUSED.inc()
        raise Unavailable("the session log cannot take more exchanges (Redis unreachable, spool full); retry later")
    return writer


def _session_store(request: Request) -> SessionStore:
    return request.app.state.session_store  # type: ignore[no-any-return]


def _require_admin(request: Request) -> None:
    settings: Settings = request.app.state.settings
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("admin API: send 'Authorization: Bearer <SLEEPD_ADMIN_TOKEN>'")
    expected = settings.admin_token.get_secret_value() if settings.admin_token else ""
    # Constant-time compare; with no token configured every token is wrong (admin API disabled).
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("admin API: wrong token" if expected else "admin API disabled: SLEEPD_ADMIN_TOKEN is unset")


SettingsDep = Annotated[Settings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]
SessionLogDep = Annotated[SessionLogWriter, Depends(_session_log)]
SessionStoreDep = Annotated[SessionStore, Depends(_session_store)]
AdminAuth = Depends(_require_admin)
