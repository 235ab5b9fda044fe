"""Property test: whatever JSON arrives at the chat endpoint, the answer is never a 500 and errors keep the
OpenAI shape. Hypothesis mixes valid requests with wrong types, out-of-range values and unknown fields."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings

from tests.app.bodies import bodies, clamp
from tests.conftest import Server


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_chat_endpoint_never_500(server: Server, body: Any) -> None:
    r = httpx.post(server.api + "/chat/completions", json=clamp(body), timeout=60)
    assert r.status_code < 500, (body, r.status_code, r.text[:500])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["code"] == r.status_code
