"""Hypothesis strategies for chat request bodies: valid requests mixed with wrong types, out-of-range values
and unknown fields. Used by the property test (tests/app/test_fuzz.py) and by the soak's hostile minority
(load_tests/soak.py), which draws a fixed, seeded pool of them."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st

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


def clamp(body: Any) -> Any:
    """Keep valid requests short: the properties are about status codes and records, not generation."""
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 0:
        body["max_tokens"] = min(body["max_tokens"], 12)
    elif isinstance(body, dict):
        body.setdefault("max_tokens", 4)
    return body


def sample_bodies(n: int, seed: int) -> list[Any]:
    """`n` bodies drawn by Hypothesis from `bodies`, the same for the same seed (outside a test run)."""
    out: list[Any] = []

    @fixed_seed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(body=bodies)
    def collect(body: Any) -> None:
        out.append(clamp(body))

    collect()
    return out
