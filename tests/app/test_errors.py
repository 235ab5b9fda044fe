"""Bad input gets an OpenAI-style error with the right status; never a 500, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import Server


def post(server: Server, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(server.api + "/chat/completions", json=body, timeout=60, **kwargs)


def assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]
    return err  # type: ignore[no-any-return]


def test_unknown_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert "gpt-17" in str(e.value)


def test_prompt_over_the_context_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="sleepd", messages=[{"role": "user", "content": "word " * 1500}])
    assert "context" in str(e.value)


def test_max_tokens_over_the_context_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="sleepd", messages=[{"role": "user", "content": "hi"}], max_tokens=5000)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "sleepd"},  # no messages
        {"model": "sleepd", "messages": "hello"},
        {"model": "sleepd", "messages": [{"role": "user", "content": "hi"}], "temperature": -1},
        {"model": "sleepd", "messages": [{"role": "user", "content": "hi"}], "n": 0},
        {"model": "sleepd", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3},
        {"model": "sleepd", "messages": [{"role": "user", "content": "hi"}], "top_p": 7},
        {"model": "sleepd", "messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}},
    ],
)
def test_invalid_parameters_are_400(server: Server, body: dict[str, Any]) -> None:
    assert_openai_error(post(server, body), 400)


def test_malformed_json_and_wrong_content_type_are_400(server: Server) -> None:
    r = httpx.post(server.api + "/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(r, 400)
    r = httpx.post(server.api + "/chat/completions", content=b"hello", headers={"content-type": "text/plain"})
    assert_openai_error(r, 400)


def test_oversized_body_is_413(server: Server) -> None:
    big = {"model": "sleepd", "messages": [{"role": "user", "content": "x" * (300 * 1024)}]}
    assert_openai_error(post(server, big), 413)


def test_invalid_session_id_is_400(server: Server) -> None:
    body = {"model": "sleepd", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    err = assert_openai_error(post(server, body, headers={"X-Session-Id": "bad id with spaces"}), 400)
    assert err["param"] == "X-Session-Id"


def test_admin_requires_the_token(server: Server) -> None:
    url = server.base_url + "/admin/sessions"
    assert_openai_error(httpx.get(url), 401)
    assert_openai_error(httpx.get(url, headers={"Authorization": "Bearer wrong"}), 403)
    assert httpx.get(url, headers=server.admin_headers()).status_code == 200
    assert_openai_error(httpx.get(url + "/no-such-session", headers=server.admin_headers()), 404)


def test_server_still_serves_after_bad_input(client: OpenAI) -> None:
    r = client.chat.completions.create(model="sleepd", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r.choices[0].finish_reason == "length"
