"""The cache port's contract, run against both adapters (memory, real Redis)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from services.cache import Cache, CacheUnavailableError, MemoryCache, RedisCache
from tests.support.redis_db import RedisProxy


class Counter:
    """A computation that counts its runs and takes a little while, like a provider call."""

    def __init__(self, value: bytes = b"fares", delay: float = 0.05) -> None:
        self.calls = 0
        self.value = value
        self.delay = delay

    async def __call__(self) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.value


@pytest_asyncio.fixture(params=["memory", "redis"])
async def cache(
    request: pytest.FixtureRequest, redis_client: Redis, redis_prefix: str
) -> AsyncIterator[Cache]:
    adapter: Cache = (
        MemoryCache()
        if request.param == "memory"
        else RedisCache(redis_client, prefix=redis_prefix)
    )
    yield adapter
    await adapter.close()


async def test_set_get_delete(cache: Cache) -> None:
    key = f"k-{secrets.token_hex(4)}"
    assert await cache.get(key) is None
    await cache.set(key, b"\x00bytes\xff", ttl=30)
    assert await cache.get(key) == b"\x00bytes\xff"
    await cache.delete(key)
    assert await cache.get(key) is None


async def test_get_many_answers_each_key_in_order(cache: Cache) -> None:
    await cache.set("day-1", b"fares 1", ttl=30)
    await cache.set("day-3", b"fares 3", ttl=30)
    await cache.set("day-4", b"gone", ttl=0.05)
    await asyncio.sleep(0.15)
    found = await cache.get_many(["day-3", "day-2", "day-1", "day-4"])
    assert found == [b"fares 3", None, b"fares 1", None]
    assert await cache.get_many([]) == []


async def test_clear_drops_every_entry(cache: Cache) -> None:
    await cache.set("a", b"1", ttl=30)
    await cache.set("b", b"2", ttl=30)
    assert await cache.clear() == 2
    assert await cache.get("a") is None
    assert await cache.get("b") is None


async def test_values_expire_after_their_ttl(cache: Cache) -> None:
    await cache.set("short", b"v", ttl=0.15)
    await cache.set("long", b"v", ttl=30)
    await asyncio.sleep(0.3)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"v"


async def test_concurrent_identical_computations_run_once(cache: Cache) -> None:
    compute = Counter()
    flights = await asyncio.gather(
        *(cache.single_flight("search", compute, ttl=30) for _ in range(100))
    )
    assert compute.calls == 1
    assert {f.value for f in flights} == {b"fares"}
    assert sum(f.computed for f in flights) == 1
    # ...and later callers read the stored value.
    again = await cache.single_flight("search", compute, ttl=30)
    assert again == type(again)(b"fares", computed=False)
    assert compute.calls == 1


async def test_different_keys_compute_separately(cache: Cache) -> None:
    compute = Counter()
    await asyncio.gather(
        cache.single_flight("a", compute, ttl=30), cache.single_flight("b", compute, ttl=30)
    )
    assert compute.calls == 2


async def test_a_failure_reaches_every_waiter_and_is_not_cached(cache: Cache) -> None:
    calls = 0

    async def failing() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise RuntimeError("provider down")

    results = await asyncio.gather(
        *(cache.single_flight("bad", failing, ttl=30) for _ in range(10)),
        return_exceptions=True,
    )
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await cache.get("bad") is None
    ok = await cache.single_flight("bad", Counter(b"now fine"), ttl=30)
    assert ok.value == b"now fine"
    assert ok.computed


async def test_a_caller_giving_up_does_not_cancel_the_others(cache: Cache) -> None:
    compute = Counter(delay=0.2)
    impatient = asyncio.create_task(cache.single_flight("slow", compute, ttl=30))
    await asyncio.sleep(0.02)
    patient = asyncio.create_task(cache.single_flight("slow", compute, ttl=30))
    await asyncio.sleep(0.02)
    impatient.cancel()
    flight = await patient
    assert flight.value == b"fares"
    assert compute.calls == 1
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_memory_cache_is_bounded() -> None:
    cache = MemoryCache(max_entries=3)
    for index in range(5):
        await cache.set(f"k{index}", b"v", ttl=30)
    assert [await cache.get(f"k{index}") for index in range(5)] == [None, None, b"v", b"v", b"v"]


# Redis: shared between processes ------------------------------------------------------------
@pytest_asyncio.fixture
async def second_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


async def test_single_flight_spans_processes(
    redis_client: Redis, second_client: Redis, redis_prefix: str
) -> None:
    """Two adapters with their own connections stand for two worker processes."""
    one = RedisCache(redis_client, prefix=redis_prefix)
    two = RedisCache(second_client, prefix=redis_prefix)
    compute = Counter(delay=0.1)
    flights = await asyncio.gather(
        *(
            (one if index % 2 else two).single_flight("shared", compute, ttl=30)
            for index in range(100)
        )
    )
    assert compute.calls == 1
    assert {f.value for f in flights} == {b"fares"}
    assert sum(f.computed for f in flights) == 1


async def test_a_crashed_leader_only_delays_the_others(
    redis_client: Redis, redis_prefix: str
) -> None:
    cache = RedisCache(redis_client, prefix=redis_prefix, lock_ttl=30, wait_timeout=0.3)
    # A leader took the lock, then its process died: the lock stays, no value ever comes.
    await redis_client.set(f"{redis_prefix}:l:orphan", "dead-leader", px=30_000)
    compute = Counter()
    started = asyncio.get_running_loop().time()
    flight = await cache.single_flight("orphan", compute, ttl=30)
    waited = asyncio.get_running_loop().time() - started
    assert flight.value == b"fares"
    assert compute.calls == 1
    assert 0.25 <= waited < 2


async def test_an_expired_leader_lock_is_taken_over(redis_client: Redis, redis_prefix: str) -> None:
    cache = RedisCache(redis_client, prefix=redis_prefix, wait_timeout=5)
    await redis_client.set(f"{redis_prefix}:l:stale", "dead-leader", px=150)
    compute = Counter()
    flight = await cache.single_flight("stale", compute, ttl=30)
    assert flight.computed
    assert compute.calls == 1
    # The new leader released its own lock; a later search does not wait for anything.
    assert await redis_client.exists(f"{redis_prefix}:l:stale") == 0


async def test_keys_live_under_the_prefix(redis_client: Redis, redis_prefix: str) -> None:
    cache = RedisCache(redis_client, prefix=redis_prefix)
    await cache.single_flight("mine", Counter(), ttl=30)
    keys = {k.decode() async for k in redis_client.scan_iter(match=f"{redis_prefix}:*")}
    assert keys == {f"{redis_prefix}:v:mine"}
    assert 0 < await redis_client.pttl(f"{redis_prefix}:v:mine") <= 30_000


async def test_with_redis_down_searches_still_share_within_the_process(
    redis_proxy: RedisProxy, redis_prefix: str
) -> None:
    client = Redis.from_url(redis_proxy.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    cache = RedisCache(client, prefix=redis_prefix)
    try:
        await redis_proxy.stop()
        with pytest.raises(CacheUnavailableError):
            await cache.get("anything")
        with pytest.raises(CacheUnavailableError):
            await cache.get_many(["a", "b"])
        compute = Counter()
        flights = await asyncio.gather(
            *(cache.single_flight("down", compute, ttl=30) for _ in range(20))
        )
        assert compute.calls == 1
        assert {f.value for f in flights} == {b"fares"}
    finally:
        await client.aclose()


async def test_from_url_owns_and_closes_its_client(redis_url: str, redis_prefix: str) -> None:
    cache = RedisCache.from_url(redis_url, prefix=redis_prefix)
    await cache.ping()
    await cache.set("x", b"1", ttl=5)
    assert await cache.get("x") == b"1"
    await cache.delete("x")
    await cache.close()
