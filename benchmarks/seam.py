"""What a booking costs at the engine seam: the flow tests' unit of work.

    uv run python -m benchmarks.seam [--bookings 200]

The seam kit (tests/support/flowkit.py: the production ``open_services`` on SQLite in memory,
the memory state store, demo fares on a fixed clock, the sandbox gateway, a ``MemoryNotifier``)
plays the happy path (tests/support/happy_path.py: 12 turns from /start to the payment link)
and pays it through the sandbox gateway, once per traveller, one traveller at a time. Printed:
how long opening the kit takes (the airport index is built once before, as the test session
does), then wall time and CPU per booking (p50, p99, mean) and per turn, after a warm-up of 5
bookings (the first one pays for imports and caches: dateparser alone is some 0.5 s). The
confirmation emails are built in a thread and written after each booking is confirmed; their
cost shows in the CPU figure, not in the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from services.flights.places import PlaceIndex
from tests.support.flowkit import open_seam

WARM_UP = 5
FIRST_TRAVELLER = 800_000


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(bookings: int) -> None:
    started = time.perf_counter()
    places = PlaceIndex.default()
    print(f"airport index: {time.perf_counter() - started:.2f} s (once per test session)")
    with tempfile.TemporaryDirectory(prefix="seam-bench-") as folder:
        opened = time.perf_counter()
        async with open_seam(Path(folder), places=places, rate_limited=False) as kit:
            print(f"open_seam: {(time.perf_counter() - opened) * 1000:.1f} ms")
            script = kit.happy_path()
            walls: list[float] = []
            cpus: list[float] = []
            for number in range(WARM_UP + bookings):
                chat = kit.chat(FIRST_TRAVELLER + number)
                wall, cpu = time.perf_counter(), time.process_time()
                await chat.play(script)
                await kit.pay(await chat.booking())
                await kit.services.receipts.drain()
                if number >= WARM_UP:
                    walls.append((time.perf_counter() - wall) * 1000)
                    cpus.append((time.process_time() - cpu) * 1000)
    turns = len(script)
    print(f"{bookings} bookings of {turns} turns and a payment each, one at a time:")
    for name, values in (("wall", walls), ("cpu", cpus)):
        mean = statistics.fmean(values)
        print(
            f"  {name}: p50 {_quantile(values, 0.5):.1f} ms, p99 {_quantile(values, 0.99):.1f} ms,"
            f" mean {mean:.1f} ms per booking ({mean / turns:.2f} ms per turn)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.bookings))


if __name__ == "__main__":
    main()
