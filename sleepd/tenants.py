"""Tenants and API keys: who is calling `/v1`, whose memory their sessions build, and whether they are learned.

A key belongs to one tenant. Keys are stored hashed (SHA-256 of a 256-bit random secret: a stolen Redis dump
holds no usable key) in one Redis hash, with their consent policy:

- `learn`: sessions sent with this key are consolidated into the tenant's adapter (unless a request says
  `X-Sleepd-Learn: off`);
- `opted_out`: what happens to an exchange that must not be learned (the key's `learn` is off, or the request
  opted out): `audit` logs it with `learn: false` (kept for audit, never in a sleep's snapshot), `drop` does
  not log it at all.

With no key ever created, `/v1` stays open and every session is the `default` tenant's (the single-tenant
behaviour). Creating the first key switches the deployment to keyed mode for good (a flag in Redis): revoking
the last key must not reopen the API. `SLEEPD_REQUIRE_API_KEY=true` fails closed before any key exists.

Servers keep the key table in memory (`KeyCache`), reloaded when its version counter moves (one GET per
refresh), and mirrored to a local file so that a server started while Redis is away still enforces keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from sleepd import keys
from sleepd.durable import private
from sleepd.keys import DEFAULT_TENANT

log = logging.getLogger(__name__)

TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
KEY_PREFIX = "sk-sleepd-"
_ENABLED_FIELD = "__enabled__"  # a field of the keys hash: keyed mode, once on, stays on


class InvalidTenant(ValueError):
    pass


def check_tenant(name: str) -> str:
    if not TENANT_NAME.fullmatch(name):
        raise InvalidTenant(f"tenant {name!r}: use 1-63 lowercase letters, digits, '_' or '-'")
    return name


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(BaseModel):
    id: str
    tenant: str
    name: str = ""
    learn: bool = True
    opted_out: Literal["audit", "drop"] = "audit"
    created_at: float = Field(default_factory=time.time)
    revoked_at: float | None = None
    prefix: str = Field("", description="The key's first characters, to tell keys apart in listings.")

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore:
    """The key table in Redis (sync client: the admin API calls it in a thread, the CLI directly)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def create(
        self, tenant: str, *, name: str = "", learn: bool = True, opted_out: Literal["audit", "drop"] = "audit"
    ) -> tuple[str, ApiKey]:
        """A new key for `tenant`. Returns the secret (shown once, never stored) and its record."""
        check_tenant(tenant)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(id=f"key_{uuid.uuid4().hex[:12]}", tenant=tenant, name=name, learn=learn, opted_out=opted_out,
                     prefix=secret[: len(KEY_PREFIX) + 4])  # fmt: skip
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(keys.API_KEYS, mapping={digest(secret): key.model_dump_json(), _ENABLED_FIELD: "1"})
        pipe.sadd(keys.TENANTS, tenant)
        pipe.incr(keys.API_KEYS_VERSION)
        pipe.execute()
        return secret, key

    def all(self) -> dict[str, ApiKey]:
        """digest -> key, revoked ones included."""
        raw: dict[bytes, bytes] = self.client.hgetall(keys.API_KEYS)  # type: ignore[assignment]
        return {k.decode(): ApiKey.model_validate_json(v) for k, v in raw.items() if k.decode() != _ENABLED_FIELD}

    def list(self, tenant: str | None = None) -> list[ApiKey]:
        found = [k for k in self.all().values() if tenant is None or k.tenant == tenant]
        return sorted(found, key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> ApiKey | None:
        """Mark a key revoked (kept for the audit trail). None if no key has that id."""
        for dig, key in self.all().items():
            if key.id == key_id:
                if key.active:
                    key.revoked_at = time.time()
                    pipe = self.client.pipeline(transaction=True)
                    pipe.hset(keys.API_KEYS, dig, key.model_dump_json())
                    pipe.incr(keys.API_KEYS_VERSION)
                    pipe.execute()
                return key
        return None

    def enabled(self) -> bool:
        return bool(self.client.hexists(keys.API_KEYS, _ENABLED_FIELD))


def tenants(client: redis.Redis) -> list[str]:
    """Every tenant that logged a session or owns a key, the default one included."""
    names = {m.decode() for m in client.smembers(keys.TENANTS)}  # type: ignore[union-attr]
    return sorted(names | {DEFAULT_TENANT})


@dataclass(frozen=True)
class Caller:
    """Who sent a `/v1` request and what may be done with it."""

    tenant: str
    key_id: str | None
    learn: bool  # consolidate this exchange
    log: bool  # log it at all (False: a key whose opted-out exchanges are dropped)


class AuthError(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class KeyCache:
    """The servers' in-memory copy of the key table, kept fresh by `run()` and mirrored to `mirror`."""

    def __init__(self, redis: aioredis.Redis, mirror: Path, *, require: bool = False, refresh_s: float = 1.0) -> None:
        self.redis = redis
        self.mirror = mirror
        self.require = require
        self.refresh_s = refresh_s
        self.by_digest: dict[str, ApiKey] = {}
        self.enabled = False
        self.version: bytes | None = None
        self._load_mirror()

    @property
    def keyed(self) -> bool:
        return self.enabled or self.require

    def caller(self, authorization: str | None, learn_header: bool) -> Caller:
        """The caller of a request with this `Authorization` header. Raises AuthError (-> 401)."""
        if not self.keyed:
            return Caller(DEFAULT_TENANT, None, learn_header, True)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("You didn't provide an API key. Send 'Authorization: Bearer <key>'.", "missing_api_key")
        key = self.by_digest.get(digest(token.strip()))
        if key is None or not key.active:
            raise AuthError("Incorrect API key provided (unknown or revoked).", "invalid_api_key")
        learn = key.learn and learn_header
        return Caller(key.tenant, key.id, learn, learn or key.opted_out == "audit")

    def forget(self) -> None:
        """Reload at the next refresh (called after this server changed the table)."""
        self.version = None

    async def refresh(self) -> None:
        version: Any = await self.redis.get(keys.API_KEYS_VERSION)
        if version is not None and version == self.version:
            return
        raw: Any = await self.redis.hgetall(keys.API_KEYS)
        self._apply({k.decode(): v.decode() for k, v in raw.items()})
        self.version = version
        await asyncio.to_thread(self._write_mirror, raw)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except (redis.RedisError, OSError) as exc:
                log.debug("API keys: keeping the cached table (%s)", exc)
            await asyncio.sleep(self.refresh_s)

    def _apply(self, raw: dict[str, str]) -> None:
        self.enabled = _ENABLED_FIELD in raw
        self.by_digest = {k: ApiKey.model_validate_json(v) for k, v in raw.items() if k != _ENABLED_FIELD}

    def _load_mirror(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._apply(json.loads(self.mirror.read_text()))

    def _write_mirror(self, raw: dict[bytes, bytes]) -> None:
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.mirror.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8", opener=private) as f:
            json.dump({k.decode(): v.decode() for k, v in raw.items()}, f)
        os.replace(tmp, self.mirror)


def key_info(key: ApiKey) -> dict[str, Any]:
    """A key as the admin API and CLI show it (never the secret)."""
    return key.model_dump() | {"active": key.active}
