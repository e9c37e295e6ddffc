"""Two real ``travelbot worker`` processes on one Redis queue and one SQLite database.

Telegram is the sandbox Bot API in the test, Stripe its stand-in. The test makes a booking
whose payment deadline has passed and whose Checkout Session expired, so the scheduled
``bookings.expire_overdue`` job (every 0.5 s here) expires it and tells the traveller. Each
tick runs on one worker only; a worker killed (SIGKILL) in the middle of that job, while
Stripe's stand-in holds its request, has the job run again by the other worker, and the
traveller gets exactly one "expired" message either way. A broadcast a web process hands to
the queue is sent by one worker, once to each user, and a trip reminder that is due and a price
alert that is met each reach the traveller once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from bot.jobs import SEND_BROADCAST
from bot.sandbox import SandboxBotApi
from services.alert_models import NewPriceAlert
from services.bookings import BookingService
from services.broadcast import BroadcastWorker
from services.flights.demo import DemoProvider
from services.flights.places import PlaceIndex
from services.jobs.arq_queue import ArqJobs
from services.models import (
    Booking,
    BookingStatus,
    BroadcastStatus,
    utcnow,
)
from services.money import Money
from services.payments.stripe import StripeGateway
from services.storage.sqlite import SQLiteStorage
from tests.standins.stripe import StripeStandin
from tests.support.fares import winter_trip
from tests.support.workers import JobWorkers
from tests.test_bookings import RecordingNotifier, cancel_url, success_url, traveller
from tests.test_reminders import trip
from tests.test_workers import sandbox_token

TRAVELLER_ID = 7_400_001
EXPIRE = "bookings.expire_overdue"
REMIND = "reminders.send_due"
CHECK_ALERTS = "alerts.check_due"
EXPIRED_TEXT = "has expired and nothing was charged"


@dataclass
class Rig:
    sandbox: SandboxBotApi
    stripe: StripeStandin
    storage: SQLiteStorage
    shop: BookingService
    workers: JobWorkers

    def expired_messages(self) -> list[str]:
        return [m.text for m in self.sandbox.bot_messages(TRAVELLER_ID) if EXPIRED_TEXT in m.text]

    async def overdue_booking(self, *, hold: bool = False) -> Booking:
        """A booking whose 30 minutes to pay are over and whose Checkout Session expired;
        with ``hold``, the next look at that session is held by Stripe's stand-in."""
        places = PlaceIndex.default()
        provider = DemoProvider(places=places)
        try:
            [offer, *_] = await provider.search(winter_trip(places))
        finally:
            await provider.close()
        booking, session = await self.shop.start_checkout(TRAVELLER_ID, offer, (traveller(),))
        self.stripe.expire_session(session.id)
        if hold:
            self.stripe.hold = {f"/v1/checkout/sessions/{session.id}"}
        await self.storage.attach_checkout(
            booking.id,
            checkout_session_id=session.id,
            payment_deadline=utcnow() - timedelta(minutes=1),
        )
        return booking

    async def expired_within(self, booking: Booking, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            current = await self.storage.get_booking(booking.id)
            assert current is not None
            if current.status is BookingStatus.EXPIRED and self.expired_messages():
                return
            assert time.monotonic() < deadline, f"still {current.status} after {seconds} s"
            await asyncio.sleep(0.1)


@pytest.fixture
async def rig(tmp_path: Path, redis_url: str, redis_prefix: str) -> AsyncIterator[Rig]:
    token = sandbox_token()
    async with contextlib.AsyncExitStack() as stack:
        sandbox = SandboxBotApi(token=token, idle_quiet=0.05)
        await sandbox.start()
        stack.push_async_callback(sandbox.stop)
        stripe = await stack.enter_async_context(StripeStandin())
        stack.callback(stripe.release)  # a held request never outlives the test
        await sandbox.add_user(TRAVELLER_ID)
        # Their chat exists once they wrote; no process reads the update (workers don't poll).
        await sandbox.user_sends(TRAVELLER_ID, "/start")
        workers = JobWorkers(
            folder=tmp_path,
            token=token,
            telegram_url=sandbox.url,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            extra={
                "STRIPE_SECRET_KEY": stripe.api_key,
                "STRIPE_WEBHOOK_SECRET": stripe.webhook_secret,
                "STRIPE_API_BASE": stripe.base_url,
                "TMPDIR": str(tmp_path),  # where a worker keeps its heartbeat (bot/liveness.py)
            },
        )
        stack.push_async_callback(workers.close)
        storage = SQLiteStorage(workers.sqlite_path)
        await storage.start()
        stack.push_async_callback(storage.close)
        gateway = StripeGateway(stripe.api_key, stripe.webhook_secret, api_base=stripe.base_url)
        stack.push_async_callback(gateway.close)
        shop = BookingService(
            storage,
            DemoProvider(places=PlaceIndex.default()),
            gateway,
            RecordingNotifier(),
            success_url=success_url,
            cancel_url=cancel_url,
        )
        await workers.start(2)
        yield Rig(sandbox, stripe, storage, shop, workers)


@pytest.mark.timeout(90)
async def test_each_tick_runs_on_one_worker_and_the_traveller_is_told_once(rig: Rig) -> None:
    booking = await rig.overdue_booking()

    await rig.expired_within(booking, 20)
    await asyncio.sleep(2)  # four more ticks: nothing more to say

    assert len(rig.expired_messages()) == 1
    assert booking.reference in rig.expired_messages()[0]
    a, b = rig.workers.workers
    ticks = a.started(EXPIRE) + b.started(EXPIRE)
    assert len(ticks) >= 4
    assert len(ticks) == len(set(ticks))  # no tick started twice, on one worker or across both
    assert a.problems() == []
    assert b.problems() == []


@pytest.mark.timeout(90)
async def test_a_worker_killed_mid_job_has_it_finished_by_the_other_without_a_second_message(
    rig: Rig,
) -> None:
    booking = await rig.overdue_booking(hold=True)
    await asyncio.wait_for(rig.stripe.held.wait(), 20)  # a worker is in the job, asking Stripe
    deadline = time.monotonic() + 5
    while (victim := rig.workers.running(EXPIRE)) is None:
        assert time.monotonic() < deadline, "no worker is in the job"
        await asyncio.sleep(0.05)
    [killed_job] = set(victim.started(EXPIRE)) - set(victim.finished(EXPIRE))
    victim.kill()
    rig.stripe.release()
    [survivor] = rig.workers.alive()

    await rig.expired_within(booking, 20)
    # The killed worker's job is run again once its hold on it (2 s timeout + 2 s) runs out.
    deadline = time.monotonic() + 15
    while killed_job not in survivor.retried(EXPIRE):
        assert time.monotonic() < deadline, f"{killed_job} was not retried:\n{survivor.output()}"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)

    assert len(rig.expired_messages()) == 1
    assert killed_job in survivor.finished(EXPIRE)
    assert survivor.problems() == []


@pytest.mark.timeout(90)
async def test_a_broadcast_created_elsewhere_is_sent_by_one_worker_once_to_each_user(
    rig: Rig,
) -> None:
    admin, users = 7_400_100, list(range(7_400_200, 7_400_220))
    for user_id in [admin, *users]:
        await rig.sandbox.add_user(user_id)
        await rig.sandbox.user_sends(user_id, "/start")
        await rig.storage.upsert_profile(user_id, first_name="Traveller")
    jobs = await ArqJobs.connect(rig.workers.redis_url, rig.workers.queue_name)
    try:

        async def dispatch(broadcast_id: int) -> None:
            await jobs.enqueue(SEND_BROADCAST, broadcast_id=broadcast_id)

        # What a webhook process on the arq queue does: store it, hand it to the workers.
        web = BroadcastWorker(rig.storage, RecordingNotifier(), dispatch=dispatch)
        broadcast = await web.create(admin, "Spring sale: 10% off every flight to Lisbon")
    finally:
        await jobs.close()

    deadline = time.monotonic() + 30
    while not [m for m in rig.sandbox.bot_messages(admin) if "finished" in m.text]:
        assert time.monotonic() < deadline, "the broadcast did not finish"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # a second sender would have started by now

    for user_id in users:
        got = [m.text for m in rig.sandbox.bot_messages(user_id) if "Spring sale" in m.text]
        assert len(got) == 1, f"user {user_id} got {len(got)} copies"
    a, b = rig.workers.workers
    assert len(a.started(SEND_BROADCAST) + b.started(SEND_BROADCAST)) == 1
    current = await rig.storage.get_broadcast(broadcast.id)
    assert current is not None
    assert current.status is BroadcastStatus.DONE


@pytest.mark.timeout(90)
async def test_a_due_reminder_reaches_the_traveller_once_from_two_workers(rig: Rig) -> None:
    # Air France opens check-in 30 hours before: a flight in 29 hours is due now.
    await rig.storage.upsert_profile(TRAVELLER_ID, first_name="Ana")
    await rig.storage.create_booking(trip(TRAVELLER_ID, utcnow() + timedelta(hours=29)))

    deadline = time.monotonic() + 20
    while not (got := reminders_of(rig)):
        assert time.monotonic() < deadline, "no reminder came"
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)  # four more ticks on two workers: nothing more to send

    assert len(reminders_of(rig)) == 1
    assert "AF1025 (Air France)" in got[0]
    a, b = rig.workers.workers
    ticks = a.started(REMIND) + b.started(REMIND)
    assert len(ticks) == len(set(ticks))
    assert a.problems() == []
    assert b.problems() == []


def reminders_of(rig: Rig) -> list[str]:
    return [m.text for m in rig.sandbox.bot_messages(TRAVELLER_ID) if "Check-in is open" in m.text]


@pytest.mark.timeout(90)
async def test_a_price_alert_that_is_met_is_told_once_from_two_workers(rig: Rig) -> None:
    await rig.storage.upsert_profile(TRAVELLER_ID, first_name="Ana")
    places = PlaceIndex.default()
    query = winter_trip(places)
    # A target no demo fare is above: the first check that runs meets it.
    alert = NewPriceAlert.watching(
        TRAVELLER_ID,
        query,
        target=Money(amount=10_000_000, currency="EUR"),
        lowest=None,
        next_check_at=utcnow() - timedelta(minutes=1),
    )
    assert await rig.storage.create_alert(alert, limit=10) is not None

    deadline = time.monotonic() + 30
    while not (got := drops_of(rig)):
        assert time.monotonic() < deadline, "no price alert came"
        await asyncio.sleep(0.1)
    await asyncio.sleep(6)  # two more alert ticks (every 2.5 s here) on two workers

    assert len(drops_of(rig)) == 1
    assert "LIS" in got[0] or "Lisbon" in got[0]
    a, b = rig.workers.workers
    ticks = a.started(CHECK_ALERTS) + b.started(CHECK_ALERTS)
    assert len(ticks) >= 2
    assert len(ticks) == len(set(ticks))
    assert a.problems() == []
    assert b.problems() == []


def drops_of(rig: Rig) -> list[str]:
    return [m.text for m in rig.sandbox.bot_messages(TRAVELLER_ID) if "Price drop" in m.text]


def probe(folder: Path, *options: str) -> int:
    """The image's HEALTHCHECK, as Docker runs it, in a worker's container."""
    return subprocess.run(
        [sys.executable, "-m", "bot.liveness", "--worker", *options],
        env={**os.environ, "TMPDIR": str(folder)},
        timeout=30,
        check=False,
    ).returncode


@pytest.mark.timeout(90)
async def test_a_worker_container_is_alive_while_its_worker_runs_and_not_once_it_stops(
    rig: Rig, tmp_path: Path
) -> None:
    assert probe(tmp_path) == 0
    for worker in rig.workers.alive():
        assert await worker.stop() == 0
    assert probe(tmp_path) == 1  # stopped: its heartbeat went with it

    [hung] = await rig.workers.start(1)
    assert probe(tmp_path) == 0
    hung.kill()  # no chance to clean up: the heartbeat stays, and ages
    await asyncio.sleep(1.5)
    assert probe(tmp_path, "--stale-after", "1") == 1
