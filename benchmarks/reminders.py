"""Trip reminders: what one run of the scheduled job costs when the table holds many bookings.

Run from the project root:
    uv run python -m benchmarks.reminders [--bookings 20000] [--due 200]

Fills a SQLite file (in a temporary folder) with ``--bookings`` confirmed bookings whose
departures are spread over the coming year, half of them round trips flying home 2 to 14 days
later; ``--due`` of them leave in the next day and ``--due`` more (round trips, away now) fly
home in the next day, then
times ``ReminderService.send_due`` (a MemoryNotifier in Telegram's place): the first run, which
sends what is due, and the runs after it, which find nothing new, as every minute's run
mostly does. Prints SQLite's plan for the candidate query of each departure column, which must
search that column's index rather than scan the bookings. The run's cost should follow the
bookings leaving or flying home in the next two days, not the size of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.models import BookingStatus
from services.notify import MemoryNotifier
from services.reminders import LOOKAHEAD, ReminderService
from services.storage.sqlite import SQLiteStorage
from tests.test_reminders import trip

NOW = datetime(2027, 1, 13, 12, 0, tzinfo=UTC)


async def _run(bookings: int, due: int) -> None:
    with tempfile.TemporaryDirectory(prefix="travelbot-bench-") as folder:
        storage = SQLiteStorage(Path(folder) / "bot.sqlite3")
        await storage.start()
        try:
            randomly = random.Random(7)
            started = time.perf_counter()
            users = max(bookings // 3, 1)
            for user_id in range(1, users + 1):
                await storage.upsert_profile(user_id)
            for n in range(bookings):
                returns: datetime | None = None
                if n < due:  # check-in opened (24 h) within the last 2.5 hours
                    departs = NOW + timedelta(hours=randomly.uniform(21.5, 23.5))
                elif n < 2 * due:  # away; the flight home's check-in opened likewise
                    departs = NOW - timedelta(days=randomly.uniform(1, 10))
                    returns = NOW + timedelta(hours=randomly.uniform(21.5, 23.5))
                else:
                    departs = NOW + timedelta(days=randomly.uniform(2.5, 365))
                    if n % 2:
                        returns = departs + timedelta(days=randomly.uniform(2, 14))
                await storage.create_booking(
                    trip(
                        n % users + 1,
                        departs,
                        carrier="TP",
                        status=BookingStatus.CONFIRMED,
                        returns=returns,
                        home_carrier="TP",
                    )
                )
            print(f"seeded {bookings} bookings in {time.perf_counter() - started:.1f} s")

            phone = MemoryNotifier()
            reminders = ReminderService(storage, phone, clock=lambda: NOW)
            started = time.perf_counter()
            sent = await reminders.send_due()
            first = time.perf_counter() - started
            print(f"first run: {sent} reminders sent in {first * 1000:.1f} ms")
            idle = []
            for _ in range(30):
                started = time.perf_counter()
                assert await reminders.send_due() == 0
                idle.append(time.perf_counter() - started)
            print(
                f"runs with nothing new: p50 {statistics.median(idle) * 1000:.2f} ms, "
                f"max {max(idle) * 1000:.2f} ms (30 runs)"
            )
            db = storage._db  # the adapter's own file, for its query plan
            assert db is not None
            hours = max(LOOKAHEAD.values()) / timedelta(hours=1)
            for column, kind in (("departs_at", "checkin"), ("returns_at", "return_checkin")):
                plan = await db.execute_fetchall(
                    "EXPLAIN QUERY PLAN SELECT b.* FROM bookings AS b "
                    f"INDEXED BY bookings_{column}_idx "
                    "JOIN profiles AS p ON p.id = b.user_id "
                    f"WHERE b.{column} > ? AND b.{column} <= ? AND b.status IN (?, ?) "
                    "AND p.reminders = 1 AND p.blocked = 0 AND p.bot_blocked = 0 "
                    "AND NOT EXISTS (SELECT 1 FROM booking_reminders AS r "
                    "WHERE r.booking_id = b.id AND r.kind = ?) "
                    f"ORDER BY b.{column}, b.id LIMIT 100 OFFSET 0",
                    ("a", "b", "paid", "confirmed", kind),
                )
                print(f"candidate query plan for {kind} (the next {hours:.0f} hours):")
                for row in plan:
                    print("  " + str(row[3]))
        finally:
            await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=20_000)
    parser.add_argument("--due", type=int, default=200)
    options = parser.parse_args()
    asyncio.run(_run(options.bookings, options.due))


if __name__ == "__main__":
    main()
