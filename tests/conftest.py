"""Shared fixtures: real Redis servers, a tiny model built locally, and real `sleepd serve` processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from sleepd.local_redis import start_redis
from sleepd.testing import build_tiny_llama

ROOT = Path(__file__).resolve().parents[1]
# Built models survive between runs (gitignored); everything else lives in pytest's tmp dirs.
CACHE = ROOT / ".cache"
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_redis(self.url, self.data_dir, appendonly=True)

    def stop(self) -> None:
        """Clean shutdown (flushes the AOF), as an operator's restart would."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the tests' own (tests may stop and restart it)."""
    server = RedisServer(f"redis://127.0.0.1:{free_port()}/0", tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def local_redis() -> Iterator[redis.Redis]:
    """The machine's Redis at 127.0.0.1:6379, database 15, flushed around each test."""
    client = redis.Redis.from_url(os.environ.get("SLEEPD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return build_tiny_llama(CACHE / "models" / "tiny-llama")


@dataclass
class Server:
    base_url: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.base_url + "/v1"

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_server(model: str, redis_url: str, data_dir: Path, **overrides: str) -> Server:
    """Start `sleepd serve` and wait for /ready. A port picked free can be taken by the time uvicorn binds (vLLM
    opens ports of its own while starting): then try again on another."""
    for attempt in range(3):
        try:
            return _start_server(model, redis_url, data_dir, **overrides)
        except PortTaken:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    pass


def _start_server(model: str, redis_url: str, data_dir: Path, **overrides: str) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "SLEEPD_MODEL": model,
        "SLEEPD_REDIS_URL": redis_url,
        "SLEEPD_DATA_DIR": str(data_dir),
        "SLEEPD_PORT": str(port),
        "SLEEPD_ADMIN_TOKEN": ADMIN_TOKEN,
        "SLEEPD_MAX_MODEL_LEN": "1024",
        "SLEEPD_KV_CACHE_GIB": "1",
        "SLEEPD_SPOOL_REPLAY_INTERVAL_S": "0.2",
        **overrides,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"server-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes to it for its whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    server = Server(f"http://127.0.0.1:{port}", proc, data_dir, log_path, env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log_text = log_path.read_text()
            if "address already in use" in log_text:
                raise PortTaken(log_text[-500:])
            raise RuntimeError(f"sleepd serve exited early:\n{log_text[-4000:]}")
        try:
            ready = httpx.get(server.base_url + "/ready", timeout=1)
            if ready.status_code == 200:
                return server
            if "engine failed" in ready.text:
                server.stop()
                raise RuntimeError(f"engine failed to start:\n{log_path.read_text()[-4000:]}")
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"sleepd serve not ready in 300 s:\n{log_path.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def server(tiny_model: Path, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`sleepd serve` on the tiny model, logging to the tests' own Redis."""
    srv = start_server(
        str(tiny_model),
        redis_server.url,
        tmp_path_factory.mktemp("server"),
        SLEEPD_MAX_REQUEST_BYTES=str(256 * 1024),
    )
    yield srv
    srv.stop()


@pytest.fixture()
def client(server: Server):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    with OpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=60) as c:
        yield c
