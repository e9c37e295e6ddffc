"""The search service: one provider call per distinct search, shared and cached, always logged.

Results are cached for ``ttl`` seconds under the query's normalized key (so "London" typed
twice, or by two travellers, is one entry), and concurrent identical searches share a single
provider call through ``Cache.single_flight``, across workers when the cache is Redis.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from pydantic import TypeAdapter, ValidationError

from services import metrics
from services.cache import Cache, CacheUnavailableError
from services.flights.base import FlightProvider, ProviderError
from services.models import Itinerary, SearchLogEntry, SearchQuery
from services.money import Money
from services.storage.base import Storage, StorageUnavailableError

log = logging.getLogger(__name__)

_KEY_VERSION = "v1"  # bump when the cached shape changes
_ITINERARIES: TypeAdapter[tuple[Itinerary, ...]] = TypeAdapter(tuple[Itinerary, ...])


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """What a search found. ``cached`` is True when this search caused no provider call;
    ``search_id`` is the ``flight_searches`` row (0 if the log could not be written)."""

    itineraries: tuple[Itinerary, ...]
    cached: bool
    search_id: int


class FlightSearchService:
    """Searches through the provider, the cache and the search log."""

    def __init__(
        self,
        provider: FlightProvider,
        cache: Cache,
        storage: Storage,
        *,
        ttl: int = 300,
        empty_ttl: int = 60,
    ) -> None:
        self.provider = provider
        self._cache = cache
        self._storage = storage
        self._ttl = ttl
        self._empty_ttl = empty_ttl

    def cache_key(self, query: SearchQuery) -> str:
        return f"flights:{self.provider.name}:{_KEY_VERSION}:{query.cache_key()}"

    async def search(
        self, query: SearchQuery, *, user_id: int | None, log: bool = True
    ) -> SearchOutcome:
        """Find itineraries for ``query``. Provider errors (``ProviderUnavailableError`` and
        the like) reach the caller unchanged; a failing search log does not fail the search.
        ``log=False`` re-reads results already shown (paging, sorting) without counting a new
        search in the statistics."""
        key = self.cache_key(query)

        async def compute() -> bytes:
            with metrics.provider_call(self.provider.name, "search"):
                found = await self.provider.search(query)
            return _ITINERARIES.dump_json(tuple(found))

        flight = await self._cache.single_flight(key, compute, self._ttl)
        metrics.search_cache(hit=not flight.computed)
        itineraries = self._decode(flight.value)
        if itineraries is None:
            # A stale entry from an older shape: drop it and ask the provider again.
            await self._forget(key)
            flight = await self._cache.single_flight(key, compute, self._ttl)
            itineraries = self._decode(flight.value) or ()
        if not itineraries and flight.computed:
            # Nothing flies that day, or the provider had a bad moment: ask again sooner.
            with contextlib.suppress(CacheUnavailableError):
                await self._cache.set(key, flight.value, self._empty_ttl)
        search_id = (
            await self._log(query, user_id, len(itineraries), cached=not flight.computed)
            if log
            else 0
        )
        return SearchOutcome(
            itineraries=itineraries, cached=not flight.computed, search_id=search_id
        )

    async def peek(self, query: SearchQuery) -> tuple[Itinerary, ...] | None:
        """The cached results of ``query``, or None when a search would ask the provider (or
        the cache is away): lets a caller with a budget of provider calls spend it knowingly."""
        try:
            cached = await self._cache.get(self.cache_key(query))
        except CacheUnavailableError:
            return None
        return self._decode(cached) if cached is not None else None

    async def cheapest_by_day(self, query: SearchQuery, days: Sequence[date]) -> dict[date, Money]:
        """The cheapest fare per day for a price calendar: from searches already in the cache
        (no provider call), and from the provider where it can tell cheaply (the demo always).
        Never raises for a provider or cache problem: the calendar then simply has no prices."""
        found: dict[date, Money] = {}
        missing: list[date] = []
        keys = [self.cache_key(query.model_copy(update={"departure": day})) for day in days]
        try:
            # One round trip for the month: a read per day made the date question wait for
            # some thirty in a row.
            values = await self._cache.get_many(keys)
        except CacheUnavailableError:
            values = [None] * len(keys)
        for day, cached in zip(days, values, strict=True):
            itineraries = self._decode(cached) if cached else None
            if itineraries:
                found[day] = min((i.price for i in itineraries), key=lambda price: price.amount)
            else:
                missing.append(day)
        if missing:
            try:
                found |= await self.provider.cheapest_by_day(query, missing)
            except ProviderError:
                log.info("no calendar prices from the provider this time")
        return found

    async def _forget(self, key: str) -> None:
        try:
            await self._cache.delete(key)
        except CacheUnavailableError:
            log.warning("cache unavailable: could not drop a stale search result")

    @staticmethod
    def _decode(value: bytes) -> tuple[Itinerary, ...] | None:
        try:
            return _ITINERARIES.validate_json(value)
        except ValidationError:
            log.warning("discarding a cached search result that no longer parses")
            return None

    async def _log(
        self, query: SearchQuery, user_id: int | None, results: int, *, cached: bool
    ) -> int:
        entry = SearchLogEntry(
            user_id=user_id,
            origin=query.origin.code,
            destination=query.destination.code,
            departure=query.departure,
            return_date=query.return_date,
            passengers=query.passengers.total,
            results=results,
            cached=cached,
        )
        try:
            return await self._storage.log_search(entry)
        except StorageUnavailableError:
            log.warning("could not log a search: storage unavailable")
            return 0
