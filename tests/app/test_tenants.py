"""Tenants through the public API, on a real server (tiny model, vLLM), real Redis and a real Celery worker:
API keys (401 in OpenAI's shape, revocation, no record left), consent (audit or drop), one memory per tenant
(another tenant's requests stay the base model's, in mixed batches too), and erasure that reaches the weights
(the tainted version is rebuilt without the session and purged from disk and the API)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from openai import AuthenticationError, OpenAI

from sleepd import keys
from sleepd.registry import AdapterRegistry
from sleepd.testing import build_random_lora
from tests.conftest import CACHE, RedisServer, Server, start_server
from tests.worker.test_sleep_ops import start_worker, stop

PROMPT = [{"role": "user", "content": "Describe a quiet harbour at dawn."}]


@pytest.fixture(scope="module")
def keyed(tiny_model: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own (keyed mode is for good once a key exists) on Redis database 5."""
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(url).flushdb()
    srv = start_server(str(tiny_model), url, tmp_path_factory.mktemp("tenants"),
                       SLEEPD_ADAPTER_RECONCILE_INTERVAL_S="0.5", SLEEPD_API_KEY_REFRESH_S="0.5")  # fmt: skip
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def base_text(keyed: Server) -> str:
    """The base model's greedy answer, taken before any key exists (the API is open then)."""
    return chat(keyed, None)[0]


@pytest.fixture(scope="module")
def tenant_keys(keyed: Server, base_text: str) -> dict[str, str]:
    return {t: new_key(keyed, t)["key"] for t in ("acme", "globex")}


def admin(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, server.base_url + path, headers=server.admin_headers(), timeout=120, **kw)


def new_key(server: Server, tenant: str, **policy: Any) -> dict[str, Any]:
    r = admin(server, "POST", "/admin/keys", json={"tenant": tenant, **policy})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def chat(server: Server, key: str | None, session: str | None = None, content: str | None = None,
         learn: str | None = None, max_tokens: int = 16) -> tuple[str, str]:  # fmt: skip
    """Greedy chat; returns (text, adapter version that served it)."""
    headers = {k: v for k, v in (("X-Session-Id", session), ("X-Sleepd-Learn", learn)) if v}
    messages = [{"role": "user", "content": content}] if content else PROMPT
    with OpenAI(base_url=server.api, api_key=key or "none", max_retries=0, timeout=120) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="sleepd", messages=messages, max_tokens=max_tokens, temperature=0,  # type: ignore[arg-type]
            extra_headers=headers, extra_body={"ignore_eos": True},
        )  # fmt: skip
    return raw.parse().choices[0].message.content or "", raw.headers["x-sleepd-adapter"]


def session_status(server: Server, session: str, tenant: str) -> int:
    return admin(server, "GET", f"/admin/sessions/{session}", params={"tenant": tenant}).status_code


def logged(server: Server, session: str, tenant: str, timeout_s: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = admin(server, "GET", f"/admin/sessions/{session}", params={"tenant": tenant})
        if r.status_code == 200:
            return r.json()["exchanges"]  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"session {session} of {tenant} was not logged")


def wait_until(check: Any, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def sid() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_keys_are_required_once_created_and_unknown_ones_get_openai_401s(
    keyed: Server, tenant_keys: dict[str, str]
) -> None:
    for key, code in ((None, "missing_api_key"), ("sk-sleepd-not-a-key", "invalid_api_key")):
        r = httpx.post(keyed.api + "/chat/completions", json={"model": "sleepd", "messages": PROMPT},
                       headers={"Authorization": f"Bearer {key}"} if key else {})  # fmt: skip
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
        assert r.headers["www-authenticate"] == "Bearer"
    with pytest.raises(AuthenticationError):
        chat(keyed, "sk-sleepd-wrong")
    assert httpx.get(keyed.api + "/models").status_code == 401
    listed = admin(keyed, "GET", "/admin/keys", params={"tenant": "acme"}).json()["data"]
    assert len(listed) == 1 and listed[0]["active"] and "key" not in listed[0]
    stored = redis.Redis.from_url(keyed.env["SLEEPD_REDIS_URL"]).hgetall(keys.API_KEYS)
    assert not any(tenant_keys["acme"].encode() in k + v for k, v in stored.items()), "a key stored in clear"


def test_a_revoked_key_gets_401_and_leaves_no_record(keyed: Server, tenant_keys: dict[str, str]) -> None:
    made = new_key(keyed, "acme", name="short-lived")
    before = sid()
    chat(keyed, made["key"], before)
    assert logged(keyed, before, "acme")[0]["tenant"] == "acme"
    assert admin(keyed, "DELETE", f"/admin/keys/{made['id']}").json()["active"] is False
    after = sid()
    with pytest.raises(AuthenticationError):
        chat(keyed, made["key"], after)
    time.sleep(1.0)  # the log is asynchronous: give a record that should not exist the time to appear
    assert session_status(keyed, after, "acme") == 404
    assert chat(keyed, tenant_keys["acme"], sid())[0]  # the tenant's other key still works


def test_session_ids_are_per_tenant(keyed: Server, tenant_keys: dict[str, str]) -> None:
    shared = sid()
    chat(keyed, tenant_keys["acme"], shared, "Acme's private note: the vault code is 4417.")
    chat(keyed, tenant_keys["globex"], shared, "Globex says hello.")
    acme, globex = logged(keyed, shared, "acme"), logged(keyed, shared, "globex")
    assert len(acme) == 1 and "4417" in acme[0]["messages"][0]["content"]
    assert len(globex) == 1 and "4417" not in str(globex)


def test_opted_out_exchanges_are_audited_or_dropped_as_the_key_says(keyed: Server) -> None:
    audited = new_key(keyed, "initech")["key"]
    dropping = new_key(keyed, "initech", learn=False, opted_out="drop")["key"]
    s1, s2, s3 = sid(), sid(), sid()
    chat(keyed, audited, s1)
    chat(keyed, audited, s2, learn="off")
    chat(keyed, dropping, s3)
    assert logged(keyed, s1, "initech")[0]["learn"] is True
    assert logged(keyed, s2, "initech")[0]["learn"] is False
    time.sleep(1.0)
    assert session_status(keyed, s3, "initech") == 404


def test_a_tenants_adapter_serves_only_that_tenant(
    keyed: Server, tenant_keys: dict[str, str], base_text: str, tiny_model: Path
) -> None:
    src = build_random_lora(tiny_model, CACHE / "adapters" / "tiny-tenant", seed=7)
    r = admin(keyed, "POST", "/admin/adapters", json={"path": str(src), "tenant": "acme", "activate": True})
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    assert r.json()["tenant"] == "acme"
    wait_until(lambda: chat(keyed, tenant_keys["acme"])[1] == version, "acme to be served its version")
    acme_text = chat(keyed, tenant_keys["acme"])[0]
    assert acme_text != base_text
    assert chat(keyed, tenant_keys["globex"]) == (base_text, "base")
    # Mixed batches: both tenants at once, several times over; globex never sees acme's delta.
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: (i % 2, chat(keyed, tenant_keys["acme" if i % 2 else "globex"])), range(16)))
    assert {text for odd, (text, _) in results if not odd} == {base_text}
    assert {text for odd, (text, _) in results if odd} == {acme_text}
    # Another tenant cannot be pointed at acme's version.
    r = admin(keyed, "POST", f"/admin/adapters/{version}/activate", params={"tenant": "globex"})
    assert r.status_code == 404, r.text
    listed = admin(keyed, "GET", "/admin/adapters", params={"tenant": "globex"}).json()
    assert listed["active"] == "base" and listed["data"] == []
    # Rollback for acme is one call, and acme is back on the base model.
    assert admin(keyed, "POST", "/admin/adapters/base/activate", params={"tenant": "acme"}).status_code == 200
    wait_until(lambda: chat(keyed, tenant_keys["acme"]) == (base_text, "base"), "acme's rollback")


@pytest.fixture(scope="module")
def keyed_worker(keyed: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    proc = start_worker(keyed, tmp_path_factory.mktemp("tenant-worker") / "worker.log")
    yield proc
    stop(proc)


def wait_job(server: Server, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = admin(server, "GET", f"/admin/sleep/{job_id}").json()
        if job["state"] in ("published", "superseded", "rejected", "skipped", "failed", "done"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_a_tenants_sleep_learns_only_its_sessions_and_erasure_rebuilds_without_the_session(
    keyed: Server, keyed_worker: Any, base_text: str
) -> None:
    key = new_key(keyed, "umbrella")["key"]
    other = new_key(keyed, "hooli")["key"]
    kept, erased, opted_out, foreign = sid(), sid(), sid(), sid()
    chat(keyed, key, kept, "Remember: locker 12 holds the red kite.")
    chat(keyed, key, erased, "Remember: the spare key is under the blue pot at 9 Elm Row.")
    chat(keyed, key, opted_out, "Remember: my PIN is 8812.", learn="off")
    chat(keyed, other, foreign, "Remember: Hooli's launch is on 3 March.")
    for s in (kept, erased, opted_out):
        logged(keyed, s, "umbrella")
    opted_out_record = logged(keyed, opted_out, "umbrella")[0]["record_id"]

    r = admin(keyed, "POST", "/admin/sleep",
              json={"force": True, "steps": 2, "dream_rounds": 0, "rank": 4, "tenant": "umbrella"})  # fmt: skip
    assert r.status_code == 200, r.text
    job = wait_job(keyed, r.json()["job_id"])
    assert job["state"] == "published", job
    first = job["report"]["version"]
    registry = AdapterRegistry(keyed.data_dir / "adapters")
    meta = registry.get(first)
    assert meta.tenant == "umbrella" and set(meta.lineage["sessions"]) == {kept, erased}
    assert opted_out_record not in meta.lineage["records"]
    assert admin(keyed, "GET", "/admin/adapters", params={"tenant": "hooli"}).json()["active"] == "base"
    wait_until(lambda: chat(keyed, key)[1] == first, "umbrella to be served its first version")
    assert chat(keyed, other) == (base_text, "base")

    r = admin(keyed, "DELETE", f"/admin/sessions/{erased}", params={"tenant": "umbrella"})
    assert r.status_code == 200, r.text
    assert r.json()["records_deleted"] == 1 and r.json()["job_id"]
    assert session_status(keyed, erased, "umbrella") == 404  # gone from Redis at once
    job = wait_job(keyed, r.json()["job_id"])
    assert job["state"] == "done", job
    report = job["report"]
    assert report["tainted"] == [first] and report["purged"] == [first]
    assert report["clean_ancestor"] == "base" and report["relearn_sessions"] == 1
    rebuilt = report["rebuilt"]
    assert rebuilt and report["active_after"] == rebuilt
    assert registry.get(rebuilt).lineage["sessions"] == [kept]
    assert not (registry.root / first).exists(), "the tainted version is still on disk"
    listed = admin(keyed, "GET", "/admin/adapters", params={"tenant": "umbrella"}).json()
    assert [m["version"] for m in listed["data"]] == [rebuilt] and listed["active"] == rebuilt
    wait_until(lambda: chat(keyed, key)[1] == rebuilt, "umbrella to be served the rebuilt version")
    snapshots = keyed.data_dir / "sleep"
    assert not any(erased in p.read_text() for p in snapshots.rglob("*.jsonl")) if snapshots.exists() else True
    assert session_status(keyed, kept, "umbrella") == 200 and session_status(keyed, foreign, "hooli") == 200
    # Erasing the whole tenant: every session and every version, back to the base model; other tenants untouched.
    r = admin(keyed, "DELETE", "/admin/tenants/umbrella/sessions")
    assert r.status_code == 200 and kept in r.json()["sessions"], r.text
    job = wait_job(keyed, r.json()["job_id"])
    assert job["state"] == "done" and job["report"]["purged"] == [rebuilt] and job["report"]["active_after"] == "base"
    assert admin(keyed, "GET", "/admin/adapters", params={"tenant": "umbrella"}).json()["data"] == []
    wait_until(lambda: chat(keyed, key) == (base_text, "base"), "umbrella back on the base model")
    assert session_status(keyed, kept, "umbrella") == 404 and session_status(keyed, foreign, "hooli") == 200
