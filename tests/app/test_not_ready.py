"""Before the engine has loaded, the API says so with 503 (and /health stays live)."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_health_says_what_is_degraded(tmp_path: Path, local_redis: redis.Redis) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/15")
    with TestClient(create_app(settings, start_engine=False)) as http:
        r = http.get("/health")
        assert r.status_code == 200
        assert r.json()["status"] == "degraded" and r.json()["degraded"] == ["engine loading"]
        assert r.json()["redis"] == "up" and r.json()["session_log"] == "ok"


def test_redis_unreachable_is_reported_not_fatal(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings, start_engine=False)) as http:
        r = http.get("/health")
        assert r.status_code == 200 and r.json()["redis"] == "down"
        assert "redis unreachable" in r.json()["degraded"]


def test_a_full_spool_fails_readiness(tmp_path: Path, local_redis: redis.Redis) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/15", spool_max_bytes=10)
    settings.spool_path.parent.mkdir(parents=True)
    # Records spooled while Redis was away, more than the cap (the replay would empty it: keep Redis "away").
    settings.spool_path.write_text("x" * 100 + "\n")
    away = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(away, start_engine=False)) as http:
        ready = http.get("/ready")
        assert ready.status_code == 503 and "session log full" in ready.json()["error"]["message"]
        assert http.get("/health").json()["session_log"] == "full"


def test_a_failing_sleep_collector_does_not_take_metrics_down(
    tmp_path: Path, local_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import metrics, sleep_metrics

    def broken(*_: object) -> None:  # a fake collector: the bug class is "anything but a Redis error"
        raise KeyError("pending_tokens")

    monkeypatch.setattr(sleep_metrics, "refresh", broken)
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/15")
    with TestClient(create_app(settings, start_engine=False)) as http:
        before = metrics.SLEEP_METRICS_ERRORS._value.get()
        r = http.get("/metrics")
        assert r.status_code == 200 and "sleepd_requests_total" in r.text
        assert metrics.SLEEP_METRICS_ERRORS._value.get() == before + 1
