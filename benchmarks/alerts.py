"""What one price alert check costs, and what sharing the search cache saves.

Run from the project root:  uv run python -m benchmarks.alerts [--alerts 1000] [--routes 50]

``AlertService.check_due`` on the embedded defaults (a SQLite file, the memory cache) over demo
fares that the benchmark moves (tests/support/fares.py). Prints, per run: wall time and CPU per
alert checked, SQL statements per alert, and provider calls against routes. Three runs:
``--alerts`` alerts spread over ``--routes`` routes with no change of fare; the same after every
fare dropped (each alert tells its traveller once: the cost of a notification); and all the
alerts on one route twice, in two cache periods: one provider call each time, however many
alerts watch it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from services.alerts import AlertService
from services.cache import MemoryCache
from services.flights.places import PlaceIndex
from services.flights.search import FlightSearchService
from services.models import SearchQuery, today_anywhere
from services.notify import MemoryNotifier
from services.storage.sqlite import SQLiteStorage
from tests.support.days import Clock, coming_weekday_at
from tests.support.fares import ScriptedFares

EVERY = timedelta(hours=3)


class CountingSQLite(SQLiteStorage):
    """SQLite storage that counts its statements (every operation the check uses is one)."""

    statements = 0

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self.statements += 1
        return await super()._all(sql, params)

    async def _changes(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.statements += 1
        return await super()._changes(sql, params)


async def _run(
    label: str, service: AlertService, storage: CountingSQLite, fares: ScriptedFares, routes: int
) -> None:
    """One check run, and its cost per alert checked."""
    statements, searches = storage.statements, fares.searches
    wall, cpu = time.perf_counter(), time.process_time()
    checked = await service.check_due()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    per = max(checked, 1)
    print(
        f"{label:<34} {checked:>5} alerts  {wall * 1000 / per:6.3f} ms/alert "
        f"(cpu {cpu * 1000 / per:6.3f})  {(storage.statements - statements) / per:4.2f} SQL/alert"
        f"  {fares.searches - searches:>4} provider calls for {routes} route(s)"
    )


class Bench:
    """One worker's alert check on a fresh SQLite file, over demo fares the benchmark moves."""

    def __init__(self, folder: Path, places: PlaceIndex, *, searches_per_run: int) -> None:
        self.places = places
        self.clock = Clock(coming_weekday_at(2, 9))
        first_day = today_anywhere(self.clock())
        self.first_day = first_day
        self.storage = CountingSQLite(folder / f"alerts-{id(self)}.sqlite3")
        self.fares = ScriptedFares(places=places, today=lambda: first_day, clock=self.clock)
        cache = MemoryCache(clock=lambda: self.clock().timestamp())
        self.notifier = MemoryNotifier()
        self.service = AlertService(
            self.storage,
            FlightSearchService(self.fares, cache, self.storage),
            self.notifier,
            max_per_user=1,
            searches_per_run=searches_per_run,
            check_every=EVERY,
            batch=100_000,
            clock=self.clock,
        )

    def query(self, destination: str, days: int) -> SearchQuery:
        return SearchQuery(
            origin=self.places.airport_location("LIS"),
            destination=self.places.airport_location(destination),
            departure=self.first_day + timedelta(days=days),
            currency="EUR",
        )

    async def run(self, label: str, routes: int) -> None:
        self.clock.advance(EVERY * 1.2)  # past every alert's spread, and a new cache period
        await _run(label, self.service, self.storage, self.fares, routes)


async def main(alerts: int, routes: int) -> None:
    places = PlaceIndex.default()
    with tempfile.TemporaryDirectory() as folder:
        spread = Bench(Path(folder), places, searches_per_run=routes)
        one = Bench(Path(folder), places, searches_per_run=1)
        for bench in (spread, one):
            await bench.storage.start()
        try:
            queries = [spread.query("FCO", 10 + day) for day in range(routes)]
            # "When it drops", from no fare seen: the first run sees one, the second a drop.
            for user in range(alerts):
                query = queries[user % routes]
                await spread.service.watch(user + 1, query, target=None, lowest=None)
                await one.service.watch(user + 1, one.query("MAD", 30), target=None, lowest=None)

            await spread.run(f"{alerts} alerts on {routes} routes", routes)
            spread.fares.cut = 1_00
            await spread.run("  the same, every fare dropped", routes)
            print(f"{'':<34} {len(spread.notifier.sent)} messages sent (one per alert)")
            await spread.run("  the same fares again", routes)
            print(f"{'':<34} {len(spread.notifier.sent)} messages sent in all (none new)")
            for period in (1, 2):
                await one.run(f"{alerts} alerts on 1 route, period {period}", 1)
        finally:
            for bench in (spread, one):
                await bench.storage.close()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--routes", type=int, default=50)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _arguments()
    asyncio.run(main(arguments.alerts, arguments.routes))
