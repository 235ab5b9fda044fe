"""Before the engine has loaded, the API says so with 503 (and /health stays live)."""

from __future__ import annotations

from pathlib import Path

import redis
from fastapi.testclient import TestClient

from app.main import create_app
from sleepd.config import Settings


def test_requests_before_the_engine_is_ready_get_503(tmp_path: Path, local_redis: redis.Redis) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/15")
    with TestClient(create_app(settings, start_engine=False)) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 503
        r = http.post("/v1/chat/completions", json={"model": "sleepd", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "ServiceUnavailableError"
        assert r.headers["x-session-id"].startswith("sess_")
