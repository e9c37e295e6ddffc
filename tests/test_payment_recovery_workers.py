"""A worker killed (SIGKILL) between "paid" and "confirmed": the payment is not lost.

Two real ``travelbot webhook`` processes share one database (SQLite file or the Supabase stack),
with Stripe, the flight provider (Duffel or Kiwi's Tequila) and Telegram as the test's own
stand-ins. The test makes a booking, whose provider order is made when Pay is pressed, and
delivers Stripe's checkout.session.completed to worker A; the provider holds A's request to pay
that order (after it took effect, before it answers) and the test kills A while it is held.
Worker B's sweep (every 0.5 s here; a paid booking counts as stuck after 2 s) takes the booking
over: a Duffel order found paid is confirmed with one payment and one confirmation in the
traveller's chat; a Kiwi booking that A may already have paid is left to an admin without a
second ticket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.sandbox import SandboxBotApi
from services.bookings import BookingService
from services.flights.base import FlightProvider
from services.flights.duffel import DuffelProvider
from services.flights.kiwi import KiwiProvider
from services.flights.places import PlaceIndex
from services.models import Booking, BookingStatus, Traveller
from services.payments.stripe import StripeGateway
from services.storage.base import Storage
from services.storage.sealing import Sealer
from services.storage.sqlite import SQLiteStorage
from services.storage.supabase import SupabaseStorage
from tests.standins.duffel import DuffelStandIn
from tests.standins.kiwi import KiwiStandIn
from tests.standins.stripe import StripeStandin
from tests.support.fares import winter_trip
from tests.support.supabase_stack import SupabaseStack
from tests.test_bookings import RecordingNotifier, cancel_url, success_url, traveller
from tests.test_workers import Worker, WorkerEnv, sandbox_token

S = BookingStatus
TRAVELLER_ID = 7_300_001
ADMIN_ID = 7_300_002
CONFIRM = "/v2/booking/confirm_payment"
PAY = "/air/payments"


@dataclass
class PaymentWorkerEnv(WorkerEnv):
    """Workers on the Stripe and flight provider stand-ins, with a quick sweep."""

    extra: dict[str, str] = field(default_factory=dict)

    def environment(self, port: int) -> dict[str, str]:
        return {**super().environment(port), **self.extra}


@dataclass
class Rig:
    sandbox: SandboxBotApi
    stripe: StripeStandin
    tequila: KiwiStandIn
    duffel: DuffelStandIn
    storage: Storage
    shop: BookingService  # the test's own booking service on the same database
    flights: FlightProvider  # the shop's, on the workers' provider
    a: Worker
    b: Worker

    def texts(self, chat_id: int) -> list[str]:
        return [m.text for m in self.sandbox.bot_messages(chat_id)]

    def provider_standin(self) -> KiwiStandIn | DuffelStandIn:
        return self.duffel if isinstance(self.flights, DuffelProvider) else self.tequila


@pytest.fixture
def provider_name() -> str:
    """The workers' FLIGHT_PROVIDER (a test parametrizes it to change it)."""
    return "kiwi"


@pytest.fixture(params=["sqlite", "supabase"])
def database(request: pytest.FixtureRequest) -> SupabaseStack | None:
    """Which database the workers share (sync, so it may pull in the session stack)."""
    if request.param == "supabase":
        stack: SupabaseStack = request.getfixturevalue("supabase_stack")
        return stack
    return None


@pytest.fixture
async def rig(
    database: SupabaseStack | None,
    provider_name: str,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
) -> AsyncIterator[Rig]:
    stack = database
    if stack is not None:
        await stack.reset()
    places = PlaceIndex.default()
    token = sandbox_token()
    async with contextlib.AsyncExitStack() as stack_exit:
        sandbox = SandboxBotApi(token=token, idle_quiet=0.05, webhook_retry_delay=0.1)
        await sandbox.start()
        stack_exit.push_async_callback(sandbox.stop)
        stripe = await stack_exit.enter_async_context(StripeStandin())
        tequila = KiwiStandIn()
        await tequila.start()
        stack_exit.push_async_callback(tequila.close)
        duffel = DuffelStandIn()
        await duffel.start()
        stack_exit.push_async_callback(duffel.close)
        env = PaymentWorkerEnv(
            folder=tmp_path,
            token=token,
            sandbox_url=sandbox.url,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            supabase=stack,
            extra={
                "STRIPE_SECRET_KEY": stripe.api_key,
                "STRIPE_WEBHOOK_SECRET": stripe.webhook_secret,
                "STRIPE_API_BASE": stripe.base_url,
                "FLIGHT_PROVIDER": provider_name,
                "KIWI_API_KEY": tequila.api_key,
                "KIWI_BASE_URL": tequila.base_url,
                "DUFFEL_ACCESS_TOKEN": duffel.token,
                "DUFFEL_BASE_URL": duffel.base_url,
                "ADMIN_USER_IDS": str(ADMIN_ID),
                "SWEEP_INTERVAL_SECONDS": "0.5",
                "RECONCILE_AFTER_SECONDS": "2",
            },
        )
        storage: Storage
        if stack is None:
            storage = SQLiteStorage(tmp_path / "bot.sqlite3")
        else:
            storage = await SupabaseStorage.create(
                stack.url, stack.service_key, sealer=Sealer([stack.data_key])
            )
        await storage.start()
        stack_exit.push_async_callback(storage.close)
        workers = [env.spawn("a"), env.spawn("b")]

        async def stop_workers() -> None:
            for worker in workers:
                if worker.process.poll() is None:
                    await worker.stop()

        stack_exit.push_async_callback(stop_workers)
        await asyncio.gather(*(worker.ready(timeout=90) for worker in workers))
        flights: FlightProvider
        if provider_name == "duffel":
            flights = DuffelProvider(duffel.token, base_url=duffel.base_url)
        else:
            flights = KiwiProvider(tequila.api_key, base_url=tequila.base_url, places=places)
        stack_exit.push_async_callback(flights.close)
        gateway = StripeGateway(stripe.api_key, stripe.webhook_secret, api_base=stripe.base_url)
        stack_exit.push_async_callback(gateway.close)
        shop = BookingService(
            storage,
            flights,
            gateway,
            RecordingNotifier(),
            success_url=success_url,
            cancel_url=cancel_url,
        )
        for user_id in (TRAVELLER_ID, ADMIN_ID):  # chats exist once their user wrote once
            await sandbox.add_user(user_id)
            await sandbox.user_sends(user_id, "/start")
            await sandbox.wait_for_messages(user_id, timeout=20)
        yield Rig(sandbox, stripe, tequila, duffel, storage, shop, flights, workers[0], workers[1])


async def paid_on_a_killed_worker(rig: Rig, held: str) -> Booking:
    """Book a fare (its provider order is made at Pay), pay it to worker A, and SIGKILL A while
    the provider's stand-in holds ``held``."""
    places = PlaceIndex.default()
    [offer, *_] = await rig.flights.search(winter_trip(places))
    passenger: Traveller = traveller()
    if isinstance(rig.flights, DuffelProvider):  # Duffel's orders need a phone number
        passenger = passenger.model_copy(update={"phone": "+351 912 345 678"})
    booking, session = await rig.shop.start_checkout(TRAVELLER_ID, offer, (passenger,))
    assert booking.provider_order_id  # the provider's order, not paid yet
    standin = rig.provider_standin()
    standin.hold = {held}
    completed = rig.stripe.complete_session(session.id)
    delivery = asyncio.create_task(
        rig.stripe.deliver(f"{rig.a.base_url}/stripe/webhook", completed)
    )
    await asyncio.wait_for(standin.held.wait(), 30)
    rig.a.kill()
    with contextlib.suppress(Exception):
        await delivery  # the connection died with the worker
    standin.release()
    return booking


async def status_becomes(rig: Rig, booking: Booking, wanted: BookingStatus) -> None:
    deadline = time.monotonic() + 40
    while True:
        current = await rig.storage.get_booking(booking.id)
        assert current is not None
        if current.status is wanted:
            return
        assert time.monotonic() < deadline, f"still {current.status} after 40 s"
        await asyncio.sleep(0.2)


async def a_few_more_sweeps() -> None:
    await asyncio.sleep(3)  # several of worker B's 0.5 s sweeps, past a 2 s lease


@pytest.mark.timeout(150)
@pytest.mark.parametrize("provider_name", ["duffel"])
async def test_a_worker_killed_while_duffel_takes_the_payment_is_confirmed_once(
    rig: Rig,
) -> None:
    booking = await paid_on_a_killed_worker(rig, PAY)
    assert len(rig.duffel.payments) == 1  # Duffel took A's payment; A never heard back
    assert (await rig.storage.get_booking(booking.id)).status is S.PAID  # type: ignore[union-attr]

    await status_becomes(rig, booking, S.CONFIRMED)
    await rig.sandbox.wait_for_messages(TRAVELLER_ID, timeout=20)
    await a_few_more_sweeps()

    assert len(rig.duffel.payments) == 1  # B found the order paid and paid nothing again
    assert rig.duffel.requests["POST /air/orders"] == 1
    confirmed = await rig.storage.get_booking(booking.id)
    assert confirmed is not None
    assert confirmed.airline_reference is not None
    confirmations = [t for t in rig.texts(TRAVELLER_ID) if "Booking confirmed" in t]
    assert len(confirmations) == 1
    assert booking.reference in confirmations[0]
    assert confirmed.airline_reference in confirmations[0]
    assert rig.stripe.refunds == {}
    assert [t for t in rig.texts(ADMIN_ID) if booking.reference in t] == []
    assert rig.b.problems() == []


@pytest.mark.timeout(150)
async def test_a_worker_killed_while_kiwi_takes_the_payment_never_buys_twice(
    rig: Rig,
) -> None:
    booking = await paid_on_a_killed_worker(rig, CONFIRM)

    await rig.sandbox.wait_for_messages(ADMIN_ID, timeout=40)
    await a_few_more_sweeps()

    assert len(rig.tequila.confirmed) == 1  # A's payment went through; B did not pay again
    assert len(rig.tequila.saved_bookings) == 1  # saved once, at Pay
    assert (await rig.storage.get_booking(booking.id)).status is S.PAID  # type: ignore[union-attr]
    alerts = [t for t in rig.texts(ADMIN_ID) if booking.reference in t]
    assert len(alerts) == 1
    assert "may or may not be paid" in alerts[0]
    assert "4000001" in alerts[0]  # the Kiwi booking to check
    pending = [t for t in rig.texts(TRAVELLER_ID) if "taking a little longer" in t]
    assert len(pending) == 1
    assert rig.stripe.refunds == {}
