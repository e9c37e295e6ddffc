"""The search service: cached, shared between concurrent travellers, logged, and resilient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from services.cache import MemoryCache, RedisCache
from services.flights.base import ProviderUnavailableError
from services.flights.demo import DemoProvider
from services.flights.kiwi import KiwiProvider
from services.flights.places import PlaceIndex
from services.flights.search import FlightSearchService
from services.models import Location, Passengers, SearchQuery, today_anywhere
from services.storage.sqlite import SQLiteStorage
from tests.standins.kiwi import API_KEY, KiwiStandIn
from tests.support.redis_db import RedisProxy

TODAY = today_anywhere()
SINCE = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def places() -> PlaceIndex:
    return PlaceIndex.default()


@pytest_asyncio.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(tmp_path / "travelbot.sqlite3")
    await store.start()
    yield store
    await store.close()


def demo(places: PlaceIndex, latency: float = 0.0) -> DemoProvider:
    return DemoProvider(places=places, today=lambda: TODAY, latency=latency)


def where(places: PlaceIndex, text: str) -> Location:
    result = places.resolve(text)
    return result.location or result.choices[0]


def lisbon_tokyo(places: PlaceIndex, **changes: object) -> SearchQuery:
    base = SearchQuery(
        origin=where(places, "lisbon"),
        destination=where(places, "tokyo"),
        departure=TODAY + timedelta(days=100),
    )
    return base.model_copy(update=changes)


async def test_a_repeated_search_is_served_from_the_cache_and_both_are_logged(
    places: PlaceIndex, storage: SQLiteStorage
) -> None:
    provider = demo(places)
    service = FlightSearchService(provider, MemoryCache(), storage)
    first = await service.search(lisbon_tokyo(places), user_id=1)
    second = await service.search(lisbon_tokyo(places), user_id=2)
    assert not first.cached
    assert second.cached
    assert first.itineraries == second.itineraries
    assert first.itineraries
    assert provider.search_calls == 1
    assert 0 < first.search_id < second.search_id
    stats = await storage.stats(SINCE)
    assert stats.searches == 2
    assert stats.top_routes[0].origin == "LIS"
    assert stats.top_routes[0].destination == "TYO"


async def test_rereading_results_for_paging_is_not_logged_again(
    places: PlaceIndex, storage: SQLiteStorage
) -> None:
    service = FlightSearchService(demo(places), MemoryCache(), storage)
    first = await service.search(lisbon_tokyo(places), user_id=1)
    again = await service.search(lisbon_tokyo(places), user_id=1, log=False)
    assert again.itineraries == first.itineraries
    assert again.search_id == 0
    assert (await storage.stats(SINCE)).searches == 1


async def test_equal_searches_share_a_key_however_they_were_built(
    places: PlaceIndex, storage: SQLiteStorage
) -> None:
    provider = demo(places)
    service = FlightSearchService(provider, MemoryCache(), storage)
    tokyo = where(places, "tokyo")
    reordered = tokyo.model_copy(update={"airports": tuple(reversed(tokyo.airports))})
    await service.search(lisbon_tokyo(places), user_id=1)
    again = await service.search(lisbon_tokyo(places, destination=reordered), user_id=1)
    assert again.cached
    assert provider.search_calls == 1
    other = await service.search(lisbon_tokyo(places, passengers=Passengers(adults=2)), user_id=1)
    assert not other.cached
    assert provider.search_calls == 2


async def test_results_expire_after_the_ttl(places: PlaceIndex, storage: SQLiteStorage) -> None:
    now = [1000.0]
    provider = demo(places)
    service = FlightSearchService(provider, MemoryCache(clock=lambda: now[0]), storage, ttl=300)
    await service.search(lisbon_tokyo(places), user_id=1)
    now[0] += 299
    assert (await service.search(lisbon_tokyo(places), user_id=1)).cached
    now[0] += 2
    assert not (await service.search(lisbon_tokyo(places), user_id=1)).cached
    assert provider.search_calls == 2


async def test_100_concurrent_identical_searches_make_one_provider_call(
    places: PlaceIndex, storage: SQLiteStorage
) -> None:
    provider = demo(places, latency=0.05)
    service = FlightSearchService(provider, MemoryCache(), storage)
    outcomes = await asyncio.gather(
        *(service.search(lisbon_tokyo(places), user_id=user) for user in range(100))
    )
    assert provider.search_calls == 1
    assert sum(not o.cached for o in outcomes) == 1
    assert len({o.itineraries for o in outcomes}) == 1
    assert len({o.search_id for o in outcomes}) == 100  # each traveller's search is logged
    assert (await storage.stats(SINCE)).searches == 100


@pytest_asyncio.fixture
async def second_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


async def test_100_concurrent_searches_across_two_workers_make_one_provider_call(
    places: PlaceIndex,
    tmp_path: Path,
    redis_client: Redis,
    second_client: Redis,
    redis_prefix: str,
) -> None:
    """Two workers: each its own provider, Redis connection and storage connection."""
    workers = []
    for client in (redis_client, second_client):
        store = SQLiteStorage(tmp_path / "shared.sqlite3")
        await store.start()
        provider = demo(places, latency=0.05)
        service = FlightSearchService(provider, RedisCache(client, prefix=redis_prefix), store)
        workers.append((service, provider, store))
    try:
        outcomes = await asyncio.gather(
            *(
                workers[user % 2][0].search(lisbon_tokyo(places), user_id=user)
                for user in range(100)
            )
        )
        assert sum(provider.search_calls for _, provider, _ in workers) == 1
        assert sum(not o.cached for o in outcomes) == 1
        assert len({o.itineraries for o in outcomes}) == 1
        assert (await workers[0][2].stats(SINCE)).searches == 100
    finally:
        for _, _, store in workers:
            await store.close()


async def test_search_works_when_redis_is_down(
    places: PlaceIndex, storage: SQLiteStorage, redis_proxy: RedisProxy, redis_prefix: str
) -> None:
    client = Redis.from_url(redis_proxy.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    provider = demo(places)
    service = FlightSearchService(provider, RedisCache(client, prefix=redis_prefix), storage)
    try:
        await redis_proxy.stop()
        outcome = await service.search(lisbon_tokyo(places), user_id=1)
        assert outcome.itineraries
        assert not outcome.cached
    finally:
        await client.aclose()


async def test_search_works_when_the_log_cannot_be_written(
    places: PlaceIndex, tmp_path: Path
) -> None:
    never_started = SQLiteStorage(tmp_path / "x.sqlite3")
    service = FlightSearchService(demo(places), MemoryCache(), never_started)
    outcome = await service.search(lisbon_tokyo(places), user_id=1)
    assert outcome.itineraries
    assert outcome.search_id == 0


@pytest_asyncio.fixture
async def tequila() -> AsyncIterator[KiwiStandIn]:
    standin = KiwiStandIn()
    await standin.start()
    yield standin
    await standin.close()


async def test_an_unavailable_provider_is_reported_and_not_cached(
    places: PlaceIndex, storage: SQLiteStorage, tequila: KiwiStandIn
) -> None:
    kiwi = KiwiProvider(API_KEY, base_url=tequila.base_url, places=places, attempts=1)
    service = FlightSearchService(kiwi, MemoryCache(), storage)
    query = lisbon_tokyo(places, destination=where(places, "FRA"))
    try:
        tequila.fail_with = [503]
        with pytest.raises(ProviderUnavailableError):
            await service.search(query, user_id=1)
        outcome = await service.search(query, user_id=1)  # Kiwi is back
        assert outcome.itineraries
        assert not outcome.cached
    finally:
        await kiwi.close()


async def test_empty_results_are_kept_for_a_shorter_time(
    places: PlaceIndex, storage: SQLiteStorage, tequila: KiwiStandIn
) -> None:
    now = [0.0]
    kiwi = KiwiProvider(API_KEY, base_url=tequila.base_url, places=places)
    service = FlightSearchService(
        kiwi, MemoryCache(clock=lambda: now[0]), storage, ttl=300, empty_ttl=60
    )
    query = lisbon_tokyo(places, destination=where(places, "FRA"))
    try:
        tequila.empty = True
        assert (await service.search(query, user_id=1)).itineraries == ()
        now[0] += 61
        tequila.empty = False
        refreshed = await service.search(query, user_id=1)
        assert refreshed.itineraries
        assert not refreshed.cached
        now[0] += 200
        assert (await service.search(query, user_id=1)).cached
        assert tequila.requests["/v2/search"] == 2
    finally:
        await kiwi.close()


async def test_calendar_prices_come_from_the_cache_for_a_real_provider(
    places: PlaceIndex, storage: SQLiteStorage, tequila: KiwiStandIn
) -> None:
    kiwi = KiwiProvider(API_KEY, base_url=tequila.base_url, places=places)
    service = FlightSearchService(kiwi, MemoryCache(), storage)
    query = lisbon_tokyo(places, destination=where(places, "FRA"))
    try:
        searched = await service.search(query, user_id=1)
        calls = sum(tequila.requests.values())
        unsearched = query.departure + timedelta(days=1)
        prices = await service.cheapest_by_day(query, [query.departure, unsearched])
    finally:
        await kiwi.close()
    assert searched.itineraries
    cheapest = min(i.price.amount for i in searched.itineraries)
    assert {day: price.amount for day, price in prices.items()} == {query.departure: cheapest}
    assert sum(tequila.requests.values()) == calls  # no search per calendar day


async def test_calendar_prices_from_the_demo_match_its_search(
    places: PlaceIndex, storage: SQLiteStorage
) -> None:
    provider = demo(places)
    service = FlightSearchService(provider, MemoryCache(), storage)
    query = lisbon_tokyo(places)
    days = [query.departure + timedelta(days=n) for n in range(3)]
    prices = await service.cheapest_by_day(query, days)
    assert provider.search_calls == 0
    assert set(prices) == set(days)
    found = await service.search(query.model_copy(update={"departure": days[1]}), user_id=1)
    assert prices[days[1]] == min((i.price for i in found.itineraries), key=lambda p: p.amount)
