"""Helpers for tests that talk to a running server."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import Server


def logged(server: Server, session_id: str, expect: int = 1, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The session's exchanges from the admin API, once `expect` of them are there (the log is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    exchanges: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.base_url}/admin/sessions/{session_id}", headers=server.admin_headers())
        if r.status_code == 200:
            exchanges = r.json()["exchanges"]
            if len(exchanges) >= expect:
                return exchanges
        time.sleep(0.05)
    raise AssertionError(f"session {session_id}: {len(exchanges)} exchange(s) logged, expected {expect}")
