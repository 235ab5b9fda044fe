"""Sleep operations end to end: the admin API enqueues, a real Celery worker (solo pool) runs the cycle on the
tiny model against real Redis, and the running server picks up what it publishes. Faults included: two
triggers at once, wrong tokens, and a worker SIGKILLed mid-cycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from sleepd.registry import AdapterRegistry
from tests.conftest import ROOT, Server

WORKER_ENV = {
    # A random tiny model cannot learn facts: relax the gate (learning is measured in bench/learning).
    "SLEEPD_GATE_MIN_RECALL_GAIN": "-1",
    "SLEEPD_GATE_MAX_ANCHOR_KL": "100",
    "SLEEPD_GATE_MAX_BASE_KL": "100",
    # Short enough for a test to see a killed worker's cycle redelivered and its lock expire.
    "SLEEPD_SLEEP_VISIBILITY_TIMEOUT_S": "15",
    "SLEEPD_SLEEP_LOCK_TTL_S": "5",
    "SLEEPD_SLEEP_ASKED_PER_STATEMENT": "1",
    "SLEEPD_SLEEP_MAX_NEW_TOKENS": "12",
}


def start_worker(server: Server, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "worker"], env={**server.env, **WORKER_ENV}, cwd=ROOT,
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while b"ready." not in log.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a worker; one that has not exited 15 s after SIGTERM (Celery's warm shutdown) is killed."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def worker(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(server, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    stop(proc)


def admin(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, server.base_url + path, headers=server.admin_headers(), timeout=60, **kw)


def chat(server: Server, n: int = 2) -> list[str]:
    sessions = []
    with OpenAI(base_url=server.api, api_key="x", max_retries=0) as client:
        for i in range(n):
            sid = f"ops-{uuid.uuid4().hex[:8]}"
            client.chat.completions.create(
                model="sleepd", messages=[{"role": "user", "content": f"Remember: locker {i} holds the red kite."}],
                max_tokens=6, extra_headers={"X-Session-Id": sid},
            )  # fmt: skip
            sessions.append(sid)
    time.sleep(0.5)  # the session log is asynchronous
    return sessions


def wait_job(server: Server, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = admin(server, "GET", f"/admin/sleep/{job_id}").json()
        if job["state"] in ("published", "superseded", "rejected", "skipped", "failed"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def serving(server: Server) -> str:
    return str(httpx.get(server.api + "/models").json()["data"][0]["sleepd_adapter"])


def test_admin_triggered_cycle_runs_in_the_worker_and_publishes(server: Server, worker: Any) -> None:
    sessions = chat(server)
    r = admin(server, "POST", "/admin/sleep", json={"force": True, "steps": 2, "dream_rounds": 0, "rank": 4})
    assert r.status_code == 200, r.text
    job = wait_job(server, r.json()["job_id"])
    assert job["state"] == "published", job
    version = job["report"]["version"]
    assert job["progress"] == 1.0 and "seeding" in job["phases"]
    assert not (server.data_dir / "sleep" / job["job_id"]).exists(), "the session snapshot outlived its job"
    meta = AdapterRegistry(server.data_dir / "adapters").verify(version)
    assert set(sessions) <= set(meta.lineage["sessions"])
    deadline = time.monotonic() + 20
    while serving(server) != version:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert any(j["job_id"] == job["job_id"] for j in admin(server, "GET", "/admin/sleep").json()["data"])
    metrics = httpx.get(server.base_url + "/metrics").text
    for line in (
        'sleepd_sleep_cycles{state="published"}',
        "sleepd_sleep_pending_records 0.0",
        "sleepd_gpu_idle 1.0",
        "sleepd_sleep_workers 1.0",
        "sleepd_sleep_consecutive_failures 0.0",
        f'sleepd_sleep_last_gate{{metric="anchor_kl",version="{version}"}}',
        'sleepd_sleep_last_phase_seconds{phase="seeding"}',
    ):
        assert line in metrics, line

    # The cycle's report page (admin token), and the same report in the terminal.
    page = admin(server, "GET", f"/admin/sleep/{job['job_id']}/report")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"{version} (this cycle)" in page.text and "<td>seeding</td>" in page.text
    assert "anchor drift KL against the previous version" in page.text
    assert httpx.get(f"{server.base_url}/admin/sleep/{job['job_id']}/report").status_code == 401
    missing = admin(server, "GET", "/admin/sleep/no-such-job/report")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "job_id"
    cli = subprocess.run([sys.executable, "-m", "cli", "report", job["job_id"]], env={**server.env, "COLUMNS": "200"},
                         cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cli.returncode == 0, cli.stderr + cli.stdout
    assert "published" in cli.stdout and f"{version} (this cycle)" in cli.stdout and "seeding" in cli.stdout

    # Nothing new since: a scheduled-style (unforced) trigger is refused with the reason.
    r = admin(server, "POST", "/admin/sleep", json={})
    assert r.status_code == 409 and "tokens pending" in r.json()["error"]["message"]


def test_two_triggers_at_once_one_runs_the_other_gets_409(server: Server, worker: Any) -> None:
    chat(server)
    results: list[httpx.Response] = []
    body = {"force": True, "steps": 1, "dream_rounds": 0, "rank": 4}
    threads = [threading.Thread(target=lambda: results.append(admin(server, "POST", "/admin/sleep", json=body)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200, 409]
    ok = next(r for r in results if r.status_code == 200)
    assert wait_job(server, ok.json()["job_id"])["state"] == "published"


def test_admin_sleep_needs_the_token_and_changes_nothing_without_it(server: Server) -> None:
    before = admin(server, "GET", "/admin/sleep").json()["data"]
    assert httpx.post(server.base_url + "/admin/sleep", json={"force": True}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(server.base_url + "/admin/sleep", json={"force": True}, headers=wrong).status_code == 403
    assert httpx.get(server.base_url + "/admin/sleep", headers=wrong).status_code == 403
    assert admin(server, "GET", "/admin/sleep").json()["data"] == before


def test_worker_killed_mid_cycle_loses_nothing_and_the_cycle_completes(
    server: Server, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    stop(worker)  # this test runs its own workers
    registry = AdapterRegistry(server.data_dir / "adapters")
    sessions = chat(server, 3)
    before = [m.version for m in registry.versions()]
    first = start_worker(server, tmp_path / "w1.log")
    r = admin(server, "POST", "/admin/sleep", json={"force": True, "steps": 40, "dream_rounds": 0, "rank": 4})
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 120
    while admin(server, "GET", f"/admin/sleep/{job_id}").json().get("phase") != "seeding":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    stop(first, signal.SIGKILL)
    time.sleep(1)
    assert [m.version for m in registry.versions()] == before, "a killed cycle must not leave an adapter behind"
    assert not list(registry.root.glob(".tmp-*")), "a killed publish must not leave a half-written folder"

    second = start_worker(server, tmp_path / "w2.log")  # the broker redelivers the unacknowledged cycle
    try:
        job = wait_job(server, job_id, timeout_s=600)
    finally:
        stop(second)
    assert job["state"] == "published" and job["attempts"] >= 2, job
    new = [m for m in registry.versions() if m.version not in before]
    assert len(new) == 1 and set(sessions) <= set(new[0].lineage["sessions"])
