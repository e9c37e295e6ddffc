"""What a booking's emails cost, and how long they hold up the event loop.

Run from the project root:  uv run python -m benchmarks.mail [--emails 50]

Prints p50/p99 of building the chat confirmation with its .ics (done on the event loop, in the
booking service's confirmation step), of building and flattening the confirmation email (the
stdlib's email package; done in a worker thread), and, for ``--emails`` confirmations handed
to ``EmailReceipts`` at once against a local SMTP server (aiosmtpd, as in the tests, on the same
event loop), the time until all are delivered and the longest the event loop went without
running a 1 ms ticker: what a chat turn in flight would have waited at worst.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from services import texts
from services.mail.compose import confirmation_email
from services.mail.receipts import EmailReceipts
from services.mail.smtp import SmtpSender, SmtpServer
from services.models import (
    Booking,
    BookingStatus,
    Gender,
    Itinerary,
    PassengerCategory,
    Segment,
    Traveller,
)
from services.money import Money
from tests.support.smtp import smtp_server


def booking() -> Booking:
    """A return trip with a connection each way (four flights) for two travellers."""
    lis, fra, nrt = ZoneInfo("Europe/Lisbon"), ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Tokyo")

    def flight(number: str, a: str, b: str, dep: datetime, arr: datetime, back: bool) -> Segment:
        return Segment(
            carrier=number[:2],
            flight_number=number,
            origin=a,
            destination=b,
            departure=dep,
            arrival=arr,
            inbound=back,
        )

    segments = (
        flight("LH1167", "LIS", "FRA", datetime(2027, 1, 20, 6, 0, tzinfo=lis),
               datetime(2027, 1, 20, 9, 55, tzinfo=fra), False),
        flight("LH716", "FRA", "NRT", datetime(2027, 1, 20, 13, 0, tzinfo=fra),
               datetime(2027, 1, 21, 8, 40, tzinfo=nrt), False),
        flight("LH717", "NRT", "FRA", datetime(2027, 2, 3, 10, 0, tzinfo=nrt),
               datetime(2027, 2, 3, 15, 30, tzinfo=fra), True),
        flight("LH1166", "FRA", "LIS", datetime(2027, 2, 3, 18, 0, tzinfo=fra),
               datetime(2027, 2, 3, 20, 5, tzinfo=lis), True),
    )  # fmt: skip
    itinerary = Itinerary(
        id="bench", provider="demo", segments=segments, price=Money(amount=245_800, currency="EUR")
    )

    def person(first: str, email: str | None) -> Traveller:
        return Traveller(
            category=PassengerCategory.ADULT,
            first_name=first,
            last_name="SILVA",
            birth_date=date(1990, 5, 17),
            gender=Gender.FEMALE,
            nationality="PT",
            passport_number="CA1234567",
            passport_expiry=date(2031, 8, 20),
            email=email,
        )

    now = datetime.now(UTC)
    return Booking(
        id="bench",
        reference="K7QW2P",
        user_id=1,
        itinerary=itinerary,
        travellers=(person("MARIA", "maria@example.com"), person("RUI", None)),
        amount=itinerary.price,
        status=BookingStatus.CONFIRMED,
        created_at=now,
        updated_at=now,
    )


def timed(work: Callable[[], object], runs: int) -> tuple[float, float]:
    work()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def delivery(emails: int) -> tuple[float, float]:
    """Seconds until ``emails`` confirmations are delivered; the longest loop stall in ms."""
    stalls: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stalls.append((now - last) * 1000)
            last = now

    async with smtp_server() as server:
        sample = booking()

        async def load(_: str) -> Booking:
            return sample  # what the email job loads from storage: the same booking each time

        receipts = EmailReceipts(
            SmtpSender(SmtpServer.from_url(server.url)),
            sender_address="bookings@example.com",
            load=load,
        )
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        for _ in range(emails):
            receipts.confirmed(sample)
        await receipts.drain()
        elapsed = time.perf_counter() - started
        tick.cancel()
        assert len(server.received) == emails, "not every email arrived"
    return elapsed, max(stalls)


def main() -> None:
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # the test server's chatter
    warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=50)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    trip = booking()
    p50, p99 = timed(lambda: texts.confirmation(trip), args.runs)
    print(f"chat confirmation with .ics (event loop): p50 {p50:.2f} ms, p99 {p99:.2f} ms")

    def build_email() -> bytes:
        message = confirmation_email(trip, sender="bookings@example.com")
        assert message is not None
        return message.as_bytes()

    p50, p99 = timed(build_email, args.runs)
    print(f"confirmation email built and flattened (thread): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    elapsed, stall = asyncio.run(delivery(args.emails))
    print(
        f"{args.emails} emails over SMTP on loopback: {elapsed:.2f} s "
        f"({args.emails / elapsed:.0f}/s); longest event-loop stall {stall:.1f} ms"
    )


if __name__ == "__main__":
    main()
