"""API keys against the machine's real Redis: stored hashed, keyed mode for good once a key exists, revocation,
and each key's consent policy as the servers' cache applies it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from sleepd import keys
from sleepd.tenants import AuthError, InvalidTenant, KeyCache, KeyStore, check_tenant


def cache_for(client: redis.Redis, mirror: Path) -> KeyCache:
    kw = client.connection_pool.connection_kwargs
    cache = KeyCache(aioredis.Redis(host=kw["host"], port=kw["port"], db=kw["db"]), mirror)

    async def load() -> None:
        await cache.refresh()
        await cache.redis.aclose()

    asyncio.run(load())
    return cache


def test_keys_decide_tenant_and_consent_and_revocation_sticks(local_redis: redis.Redis, tmp_path: Path) -> None:
    mirror = tmp_path / "apikeys.json"
    open_cache = cache_for(local_redis, mirror)
    assert open_cache.caller(None, True).tenant == "default"  # no key ever created: open, one memory

    store = KeyStore(local_redis)
    learner, k1 = store.create("acme")
    dropper, k2 = store.create("acme", learn=False, opted_out="drop")
    assert learner not in str(local_redis.hgetall(keys.API_KEYS)), "a key stored in clear"
    cache = cache_for(local_redis, mirror)
    with pytest.raises(AuthError):
        cache.caller(None, True)
    c = cache.caller(f"Bearer {learner}", True)
    assert (c.tenant, c.learn, c.log) == ("acme", True, True)
    c = cache.caller(f"Bearer {learner}", False)  # X-Sleepd-Learn: off -> audit only
    assert (c.learn, c.log) == (False, True)
    c = cache.caller(f"Bearer {dropper}", True)
    assert (c.learn, c.log) == (False, False)

    store.revoke(k1.id)
    store.revoke(k2.id)
    cache = cache_for(local_redis, mirror)
    with pytest.raises(AuthError):
        cache.caller(f"Bearer {learner}", True)
    assert cache.keyed, "revoking every key reopened the API"
    # A server started while Redis is away still enforces the keys (its local mirror).
    offline = KeyCache(aioredis.Redis(port=1), mirror)
    with pytest.raises(AuthError):
        offline.caller(None, True)


def test_tenant_names_are_checked() -> None:
    assert check_tenant("acme-2") == "acme-2"
    for bad in ("", "Acme", "a/b", "x" * 64, "../etc"):
        with pytest.raises(InvalidTenant):
            check_tenant(bad)


def test_a_vllm_api_key_that_would_protect_nothing_is_refused_at_start() -> None:
    from pydantic import ValidationError

    from sleepd.config import Settings

    for args in ("--api-key secret", "--max-num-seqs 8 --api-key=secret"):
        with pytest.raises(ValidationError, match="sleepd keys create"):
            Settings(vllm_args=args)
    assert Settings(vllm_args="--max-num-seqs 8").vllm_args == "--max-num-seqs 8"
