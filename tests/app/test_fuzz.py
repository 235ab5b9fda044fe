"""Property test: whatever JSON arrives at the chat endpoint, the answer is never a 500 and errors keep the
OpenAI shape. Hypothesis mixes valid requests with wrong types, out-of-range values and unknown fields."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Server

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
        "content": st.text(max_size=50) | json_values,
    }
)
fields: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["sleepd", "nope", ""]) | json_scalars,
    "messages": st.lists(message, max_size=3) | json_values,
    "max_tokens": st.integers(-5, 12) | json_scalars,
    "temperature": st.floats(-1, 3, allow_nan=False) | json_scalars,
    "top_p": st.floats(-1, 2, allow_nan=False) | json_scalars,
    "n": st.integers(-1, 3) | json_scalars,
    "stop": st.lists(st.text(max_size=5), max_size=3) | json_scalars,
    "seed": st.integers(-(2**70), 2**70) | json_scalars,
    "logprobs": json_scalars,
    "top_logprobs": st.integers(-2, 30) | json_scalars,
    "stream": st.booleans(),
    "stream_options": json_values,
    "response_format": json_values,
    "tools": json_values,
    "logit_bias": json_values,
}
bodies = st.fixed_dictionaries({}, optional=fields) | json_values


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_chat_endpoint_never_500(server: Server, body: Any) -> None:
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 0:
        body["max_tokens"] = min(body["max_tokens"], 12)
    elif isinstance(body, dict):
        body.setdefault("max_tokens", 4)  # keep valid requests short; the property is about status codes
    r = httpx.post(server.api + "/chat/completions", json=body, timeout=60)
    assert r.status_code < 500, (body, r.status_code, r.text[:500])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["code"] == r.status_code
