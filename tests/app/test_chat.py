"""The chat API behaves like OpenAI's / vLLM's through the official client, and every exchange is logged."""

from __future__ import annotations

import uuid

import httpx
from openai import OpenAI

from tests.app.helpers import logged
from tests.conftest import Server

MSGS = [{"role": "user", "content": "Tell me something about the sea."}]


def sid() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def test_chat_completion_is_logged_with_the_session(server: Server, client: OpenAI) -> None:
    session = sid()
    raw = client.chat.completions.with_raw_response.create(
        model="sleepd", messages=MSGS, max_tokens=12, temperature=0, extra_headers={"X-Session-Id": session}
    )
    resp = raw.parse()
    assert raw.headers["x-session-id"] == session
    assert raw.headers["x-sleepd-adapter"] == "base"
    assert resp.choices[0].message.role == "assistant"
    assert resp.usage is not None and resp.usage.completion_tokens == 12
    assert resp.choices[0].finish_reason == "length"

    (rec,) = logged(server, session)
    assert rec["messages"] == MSGS
    assert rec["choices"][0]["text"] == resp.choices[0].message.content
    assert rec["choices"][0]["finish_reason"] == "length"
    assert rec["prompt_tokens"] == resp.usage.prompt_tokens
    assert rec["completion_tokens"] == 12
    assert rec["adapter"] == "base" and rec["model"] == "sleepd" and rec["status"] == "ok"
    assert rec["schema_version"] == 1 and rec["latency_ms"] > 0 and rec["learn"] is True


def test_server_assigns_a_session_id_when_none_is_sent(server: Server, client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="sleepd", messages=MSGS, max_tokens=2)
    session = raw.headers["x-session-id"]
    assert session.startswith("sess_")
    assert len(logged(server, session)) == 1


def test_learning_opt_out_is_logged_for_audit_and_marked(server: Server, client: OpenAI) -> None:
    session = sid()
    client.chat.completions.create(model="sleepd", messages=MSGS, max_tokens=2,
                                   extra_headers={"X-Session-Id": session, "X-Sleepd-Learn": "off"})  # fmt: skip
    (rec,) = logged(server, session)
    assert rec["learn"] is False  # kept for audit; consolidation.sessions.memories leaves it out
    bad = httpx.post(server.api + "/chat/completions", json={"model": "sleepd", "messages": MSGS},
                     headers={"X-Sleepd-Learn": "maybe"})  # fmt: skip
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Sleepd-Learn"


def test_a_lone_surrogate_in_an_unlogged_field_does_not_stop_the_log(server: Server, client: OpenAI) -> None:
    session = sid()
    body = '{"model": "sleepd", "max_tokens": 2, "messages": [{"role": "user", "name": "\\udfff", "content": "hi"}]}'
    r = httpx.post(server.api + "/chat/completions", content=body,
                   headers={"content-type": "application/json", "X-Session-Id": session})  # fmt: skip
    assert r.status_code == 200
    (rec,) = logged(server, session)
    assert rec["messages"][0]["name"] == "\ufffd"
    later = [sid() for _ in range(5)]
    for s in later:
        client.chat.completions.create(model="sleepd", messages=MSGS, max_tokens=2, extra_headers={"X-Session-Id": s})
    for s in later:
        assert len(logged(server, s)) == 1, "the log goes on after the hostile request"


def test_stream_matches_non_stream_and_hides_usage_unless_asked(server: Server, client: OpenAI) -> None:
    session = sid()
    kwargs = dict(model="sleepd", messages=MSGS, max_tokens=16, temperature=0)
    full = client.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(stream=True, extra_headers={"X-Session-Id": session}, **kwargs))
    assert all(c.usage is None for c in chunks), "usage chunk forwarded without stream_options.include_usage"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full
    (rec,) = logged(server, session)
    assert rec["choices"][0]["text"] == full
    assert rec["completion_tokens"] == 16  # known even though the client did not ask for usage
    assert rec["ttft_ms"] is not None and rec["ttft_ms"] <= rec["latency_ms"]


def test_stream_with_include_usage(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="sleepd", messages=MSGS, max_tokens=5, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].choices == []


def test_sampling_parameters(server: Server, client: OpenAI) -> None:
    session = sid()
    a = client.chat.completions.create(
        model="sleepd", messages=MSGS, max_completion_tokens=8, temperature=1.0, top_p=0.9, seed=7, n=2,
        extra_headers={"X-Session-Id": session},
    )  # fmt: skip
    b = client.chat.completions.create(
        model="sleepd", messages=MSGS, max_completion_tokens=8, temperature=1.0, top_p=0.9, seed=7, n=2
    )
    assert len(a.choices) == 2
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]  # seeded
    (rec,) = logged(server, session)
    assert [c["text"] for c in rec["choices"]] == [c.message.content for c in a.choices]
    assert rec["params"]["seed"] == 7 and rec["params"]["n"] == 2


def test_logprobs_and_stop(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="sleepd", messages=MSGS, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    assert r.choices[0].logprobs is not None
    content = r.choices[0].logprobs.content or []
    assert len(content) == 6 and all(len(t.top_logprobs) == 3 for t in content)
    text = r.choices[0].message.content or ""
    # Stop on a piece of what greedy decoding produced: the output must end right before it.
    stop = text[len(text) // 2 :][:3]
    if stop.strip():
        stopped = client.chat.completions.create(
            model="sleepd", messages=MSGS, max_tokens=6, temperature=0, stop=[stop]
        )
        assert stopped.choices[0].finish_reason == "stop"
        assert stop not in (stopped.choices[0].message.content or "")


def test_completions_endpoint_is_logged(server: Server, client: OpenAI) -> None:
    session = sid()
    r = client.completions.create(
        model="sleepd", prompt="Once upon a time", max_tokens=7, temperature=0, extra_headers={"X-Session-Id": session}
    )
    (rec,) = logged(server, session)
    assert rec["endpoint"] == "completion" and rec["prompt"] == "Once upon a time"
    assert rec["choices"][0]["text"] == r.choices[0].text and rec["completion_tokens"] == 7


def test_multi_turn_session_keeps_order(server: Server, client: OpenAI) -> None:
    session = sid()
    history: list[dict[str, str]] = []
    for turn in ("My name is Ada.", "What is my name?", "Thanks!"):
        history.append({"role": "user", "content": turn})
        r = client.chat.completions.create(
            model="sleepd",
            messages=history,
            max_tokens=4,
            extra_headers={"X-Session-Id": session},  # type: ignore[arg-type]
        )
        history.append({"role": "assistant", "content": r.choices[0].message.content or ""})
    recs = logged(server, session, expect=3)
    assert [r["messages"][-1]["content"] for r in recs] == ["My name is Ada.", "What is my name?", "Thanks!"]
    listed = httpx.get(
        f"{server.base_url}/admin/sessions", params={"session_id": session, "limit": 2}, headers=server.admin_headers()
    ).json()
    assert [d["messages"][-1]["content"] for d in listed["data"]] == ["Thanks!", "What is my name?"]


def test_models_health_ready_metrics(server: Server, client: OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["sleepd"]
    health = httpx.get(server.base_url + "/health").json()
    assert health["status"] == "ok" and health["degraded"] == [] and health["engine"] == "ready"
    assert httpx.get(server.base_url + "/ready").status_code == 200
    client.chat.completions.create(model="sleepd", messages=MSGS, max_tokens=2)
    text = httpx.get(server.base_url + "/metrics").text
    for name in (
        'sleepd_requests_total{endpoint="chat",status="200"}',
        "sleepd_request_latency_seconds_bucket",
        'sleepd_tokens_total{kind="completion"}',
        'sleepd_session_log_records_total{outcome="redis"}',
        "vllm:num_requests_running",
        "vllm:generation_tokens_total",
    ):
        assert name in text, name
