"""Money is never lost or given away: payments that were taken but not finished are finished.

The booking service against real storage (SQLite and the Supabase stack), the Stripe, Kiwi and
Duffel stand-ins and the real webhook route. A failed storage write is a real one: a trigger in the
database refuses the paid → confirmed update (SQLite: ``RAISE(ABORT)``; PostgreSQL: a plpgsql
exception, which PostgREST answers with an error), as a full disk or a lost connection would.
A worker that dies mid-ticketing is a cancelled task here; tests/test_payment_recovery_workers.py
kills real processes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.config import load_settings
from bot.web_payments import add_payment_routes
from bot.web_providers import add_provider_routes
from services.bookings import BookingError, BookingService
from services.flights.base import FlightProvider
from services.flights.demo import DemoProvider
from services.flights.duffel import DuffelProvider
from services.flights.kiwi import KiwiProvider
from services.flights.places import PlaceIndex
from services.models import (
    BookingStatus,
    Itinerary,
    Traveller,
    utcnow,
)
from services.money import Money
from services.payments.events import event_from_stripe
from services.storage.base import Storage
from tests import test_bookings as _bookings
from tests.standins.duffel import DuffelStandIn
from tests.standins.kiwi import KiwiStandIn
from tests.support.fares import winter_trip
from tests.support.supabase_stack import StorageFactory
from tests.test_bookings import USER, World, cancel_url, success_url, traveller

S = BookingStatus
# The payment tests' fixtures: a booking service on each storage adapter with the Stripe stand-in.
places = _bookings.places
demo_itineraries = _bookings.demo_itineraries
itinerary = _bookings.itinerary
stripe_api = _bookings.stripe_api
world = _bookings.world


class ConfirmWriteFault:
    """A database trigger that refuses to move any booking to ``confirmed`` while armed."""

    def __init__(self, factory: StorageFactory) -> None:
        self._factory = factory
        self.armed = False

    async def arm(self) -> None:
        if self._factory.stack is None:
            with closing(sqlite3.connect(self._factory.sqlite_path)) as db, db:
                db.execute(
                    "CREATE TRIGGER test_fail_confirm BEFORE UPDATE OF status ON bookings "
                    "WHEN NEW.status = 'confirmed' "
                    "BEGIN SELECT RAISE(ABORT, 'injected fault: the write failed'); END"
                )
            db.close()
        else:
            await self._factory.stack.admin.execute(
                """
                create or replace function public.test_fail_confirm() returns trigger
                language plpgsql as $$
                begin
                  raise exception 'injected fault: the write failed';
                end;
                $$;
                create trigger test_fail_confirm before update on public.bookings
                  for each row when (new.status = 'confirmed')
                  execute function public.test_fail_confirm();
                """
            )
        self.armed = True

    async def disarm(self) -> None:
        if not self.armed:
            return
        if self._factory.stack is None:
            with closing(sqlite3.connect(self._factory.sqlite_path)) as db, db:
                db.execute("DROP TRIGGER test_fail_confirm")
            db.close()
        else:
            await self._factory.stack.admin.execute(
                "drop trigger test_fail_confirm on public.bookings;"
                "drop function public.test_fail_confirm();"
            )
        self.armed = False


@pytest.fixture
async def fault(storage_factory: StorageFactory) -> AsyncIterator[ConfirmWriteFault]:
    injector = ConfirmWriteFault(storage_factory)
    try:
        yield injector
    finally:
        await injector.disarm()


@asynccontextmanager
async def webhook_for(world: World, service: BookingService) -> AsyncIterator[str]:
    """The real Stripe webhook route in front of ``service`` (one worker)."""
    app = web.Application()
    add_payment_routes(app, service, world.gateway)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/stripe/webhook"))
    finally:
        await server.close()


def later(hours: float = 1) -> Callable[[], datetime]:
    """The clock of a worker that runs its sweep that much later."""
    return lambda: utcnow() + timedelta(hours=hours)


def another_worker(
    world: World, storage: Storage, provider: FlightProvider, **options: Any
) -> BookingService:
    """A second bot process: its own storage connection, the same chat and admins."""

    async def alert(text: str) -> None:
        world.alerts.append(text)

    return BookingService(
        storage,
        provider,
        world.gateway,
        world.notifier,
        success_url=success_url,
        cancel_url=cancel_url,
        alert_admins=alert,
        **options,
    )


def duffel_traveller() -> Traveller:
    """Duffel's orders need a phone number for each passenger."""
    return traveller().model_copy(update={"phone": "+351 912 345 678"})


def confirmations(world: World) -> list[str]:
    return [m.text for m in world.notifier.to(USER) if "Booking confirmed" in m.text]


# a payment recorded but not applied ---------------------------------------------------------
async def test_a_confirmation_whose_write_failed_is_finished_by_stripes_retry(
    world: World, itinerary: Itinerary, fault: ConfirmWriteFault, places: PlaceIndex
) -> None:
    provider = DemoProvider(places=places)
    service = world.make_service(provider=provider)
    async with webhook_for(world, service) as webhook:
        booking, session = await service.start_checkout(USER, itinerary, (traveller(),))
        event = world.stripe.complete_session(session.id)
        await fault.arm()

        [status] = await world.stripe.deliver(webhook, event)
        assert status >= 500  # Stripe will deliver it again
        assert (await world.booking(booking.reference)).status is S.PAID
        assert world.notifier.sent == []

        await fault.disarm()
        assert await world.stripe.deliver(webhook, event) == [200]
        assert (await world.booking(booking.reference)).status is S.CONFIRMED
        assert len(confirmations(world)) == 1
        assert provider.tickets_issued == 1  # the retry confirmed the ticket it already had

        assert await world.stripe.deliver(webhook, event) == [200]  # now "already handled"
    assert len(world.notifier.sent) == 1


async def test_a_confirmation_whose_write_failed_is_finished_by_one_sweep(
    world: World, itinerary: Itinerary, fault: ConfirmWriteFault, places: PlaceIndex
) -> None:
    provider = DemoProvider(places=places)
    service = world.make_service(provider=provider)
    async with webhook_for(world, service) as webhook:
        booking, session = await service.start_checkout(USER, itinerary, (traveller(),))
        await fault.arm()
        [status] = await world.stripe.deliver(webhook, world.stripe.complete_session(session.id))
        assert status >= 500
        await fault.disarm()

    # Stripe's retries never come (the endpoint was down for days); a worker's sweep finds it.
    sweeper = world.make_service(provider=provider, clock=later())
    assert await sweeper.reconcile() == 1
    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(confirmations(world)) == 1
    assert provider.tickets_issued == 1
    assert await sweeper.reconcile() == 0
    assert len(world.notifier.sent) == 1


@pytest.mark.parametrize(
    "held",
    [
        pytest.param("read", id="gone-before-paying"),
        pytest.param("/air/payments", id="gone-after-duffel-took-the-payment"),
    ],
)
async def test_a_worker_gone_mid_ticketing_is_ticketed_once_by_two_sweeping_workers(
    world: World, storage_factory: StorageFactory, places: PlaceIndex, held: str
) -> None:
    """The order was made at Pay; ticketing pays it. A worker that dies before its payment
    reaches Duffel, or after Duffel took it but before the answer, leaves a paid booking that
    one of two sweeping workers confirms, paying the order at most once in all."""
    duffel = DuffelStandIn()
    await duffel.start()
    providers = [
        DuffelProvider(duffel.token, base_url=duffel.base_url, backoff=0.01) for _ in range(3)
    ]
    try:
        [offer, *_] = await providers[0].search(winter_trip(places))
        dying = world.make_service(provider=providers[0])
        booking, session = await dying.start_checkout(USER, offer, (duffel_traveller(),))
        assert booking.provider_order_id  # held at Pay, not paid yet
        assert duffel.payments == []
        # The worker is paid and pays the held order; it dies before Duffel's answer.
        duffel.hold = {f"/air/orders/{booking.provider_order_id}" if held == "read" else held}
        event = event_from_stripe(world.stripe.complete_session(session.id))
        applying = asyncio.create_task(dying.handle_event(event))
        await asyncio.wait_for(duffel.held.wait(), 10)
        applying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await applying
        duffel.release()
        assert (await world.booking(booking.reference)).status is S.PAID

        sweepers = [
            another_worker(world, await storage_factory.open(), provider, clock=later())
            for provider in providers[1:]
        ]
        settled = await asyncio.gather(*(sweeper.reconcile() for sweeper in sweepers))
    finally:
        for provider in providers:
            await provider.close()
        await duffel.close()

    assert sorted(settled) == [0, 1]
    confirmed = await world.booking(booking.reference)
    assert confirmed.status is S.CONFIRMED
    assert len(duffel.payments) == 1  # the held order paid once from our Duffel balance
    assert duffel.requests["POST /air/orders"] == 1  # and no second order made
    [told] = confirmations(world)
    assert confirmed.airline_reference is not None
    assert confirmed.airline_reference in told
    assert world.stripe.refunds == {}
    assert world.alerts == []


async def test_a_slow_ticketing_keeps_its_lease_and_is_not_taken_over(
    world: World, storage_factory: StorageFactory, places: PlaceIndex
) -> None:
    """The worker renews its lease while the provider works: another worker's sweep, which
    would take a lapsed lease over (and, finding Kiwi's payment under way in the journal, hand
    the booking to an admin as possibly paid), leaves a live one alone."""
    lease = timedelta(seconds=3)
    tequila = KiwiStandIn()
    await tequila.start()
    kiwis = [KiwiProvider(tequila.api_key, base_url=tequila.base_url, places=places) for _ in "ab"]
    try:
        [offer, *_] = await kiwis[0].search(winter_trip(places))
        slow = world.make_service(provider=kiwis[0], stuck_after=lease)
        booking, session = await slow.start_checkout(USER, offer, (traveller(),))
        assert len(tequila.saved_bookings) == 1  # saved at Pay; ticketing pays it
        tequila.hold = {"/v2/booking/confirm_payment"}  # Kiwi takes its time to answer
        event = event_from_stripe(world.stripe.complete_session(session.id))
        applying = asyncio.create_task(slow.handle_event(event))
        await asyncio.wait_for(tequila.held.wait(), 10)
        sweeper = another_worker(world, await storage_factory.open(), kiwis[1], stuck_after=lease)
        for _ in range(8):  # sweeps over more than two lease periods
            assert await sweeper.reconcile() == 0
            await asyncio.sleep(lease.total_seconds() / 3)
        tequila.release()
        await asyncio.wait_for(applying, 30)
    finally:
        for kiwi in kiwis:
            await kiwi.close()
        await tequila.close()

    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(tequila.saved_bookings) == 1
    assert len(tequila.confirmed) == 1
    [told] = world.notifier.to(USER)
    assert "Booking confirmed" in told.text
    assert world.alerts == []


# another amount paid -------------------------------------------------------------------------
async def test_another_amount_is_refunded_told_and_alerted_once_across_workers_and_sweeps(
    world: World, itinerary: Itinerary, storage_factory: StorageFactory
) -> None:
    booking, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    world.stripe.sessions[session.id]["amount_total"] = 100  # a discount code, say
    event = world.stripe.complete_session(session.id)

    assert await world.stripe.deliver(world.webhook, event, times=3) == [200] * 3
    for hours in (1, 2):
        sweeper = world.make_service(clock=later(hours))
        await sweeper.expire_overdue()
        await sweeper.reconcile()
    async with webhook_for(world, world.make_service()) as other_worker:
        retry = world.stripe.session_event("checkout.session.completed", session.id)
        assert await world.stripe.deliver(other_worker, retry) == [200]

    assert (await world.booking(booking.reference)).status is not S.CONFIRMED
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == 100
    assert refund["payment_intent"] == world.stripe.sessions[session.id]["payment_intent"]
    [told] = world.notifier.to(USER)
    assert "did not match" in told.text
    assert "refunded" in told.text
    assert len(world.alerts) == 1

    # The traveller pays the fare on a new link; Stripe's notice of the first refund comes
    # late and is no "refunded outside the bot" for the booking now confirmed.
    _, renewed = await world.service.renew_checkout(USER, booking.reference)
    await world.stripe.deliver(world.webhook, world.stripe.complete_session(renewed.id))
    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    await world.stripe.deliver(world.webhook, world.stripe.events_of("charge.refunded")[0])
    assert len(world.alerts) == 1
    assert len(world.notifier.to(USER)) == 2


async def test_another_amount_that_cannot_be_refunded_yet_is_retried_until_it_is(
    world: World, itinerary: Itinerary
) -> None:
    _, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    world.stripe.sessions[session.id]["amount_total"] = 100
    event = world.stripe.complete_session(session.id)
    world.stripe.outages["POST /v1/refunds"] = 10  # Stripe's refunds are down

    [status] = await world.stripe.deliver(world.webhook, event)
    assert status >= 500  # not settled: Stripe will deliver it again
    assert world.stripe.refunds == {}
    assert world.notifier.sent == []
    [alert] = world.alerts
    assert "NOT refunded yet" in alert

    world.stripe.outages.clear()
    assert await world.stripe.deliver(world.webhook, event) == [200]
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == 100
    [told] = world.notifier.to(USER)
    assert "refunded" in told.text
    assert len(world.alerts) == 2
    assert "refunded in full" in world.alerts[1]


# the fare rose at ticketing ------------------------------------------------------------------
def dearer(itinerary: Itinerary, percent: int) -> Money:
    return Money(
        amount=itinerary.price.amount * (100 + percent) // 100, currency=itinerary.price.currency
    )


async def test_a_fare_that_rose_at_ticketing_is_refunded_not_bought(
    world: World, itinerary: Itinerary, places: PlaceIndex
) -> None:
    provider = DemoProvider(places=places, ticketing_prices={itinerary.id: dearer(itinerary, 5)})
    service = world.make_service(provider=provider)
    async with webhook_for(world, service) as webhook:
        booking, session = await service.start_checkout(USER, itinerary, (traveller(),))
        completed = world.stripe.complete_session(session.id)
        assert await world.stripe.deliver(webhook, completed, times=2) == [200, 200]
    await world.make_service(provider=provider, clock=later()).reconcile()

    assert provider.tickets_issued == 0
    assert (await world.booking(booking.reference)).status is S.REFUNDED
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == booking.amount.amount
    [told] = world.notifier.to(USER)
    assert "raised the fare" in told.text
    [alert] = world.alerts
    assert dearer(itinerary, 5).format() in alert
    assert "refunded" in alert


async def test_a_fare_within_the_tolerance_is_bought(
    world: World, itinerary: Itinerary, places: PlaceIndex
) -> None:
    provider = DemoProvider(places=places, ticketing_prices={itinerary.id: dearer(itinerary, 5)})
    service = world.make_service(provider=provider, fare_tolerance_percent=Decimal(5))
    async with webhook_for(world, service) as webhook:
        booking, session = await service.start_checkout(USER, itinerary, (traveller(),))
        await world.stripe.deliver(webhook, world.stripe.complete_session(session.id))

    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert provider.tickets_issued == 1
    assert world.stripe.refunds == {}


async def test_a_fare_that_rose_can_be_left_to_an_admin(
    world: World, itinerary: Itinerary, places: PlaceIndex
) -> None:
    provider = DemoProvider(places=places, ticketing_prices={itinerary.id: dearer(itinerary, 5)})
    options: dict[str, Any] = {"provider": provider, "fare_increase_action": "ask_admin"}
    service = world.make_service(**options)
    async with webhook_for(world, service) as webhook:
        booking, session = await service.start_checkout(USER, itinerary, (traveller(),))
        await world.stripe.deliver(webhook, world.stripe.complete_session(session.id))
    for hours in (1, 2):  # later sweeps leave it to the admin
        await world.make_service(clock=later(hours), **options).reconcile()

    assert (await world.booking(booking.reference)).status is S.PAID
    assert provider.tickets_issued == 0
    assert world.stripe.refunds == {}
    [alert] = world.alerts
    assert f"/ticketed {booking.reference}" in alert
    assert f"/refund {booking.reference}" in alert
    [told] = world.notifier.to(USER)
    assert "taking a little longer" in told.text

    confirmed = await world.service.mark_ticketed(booking.reference)
    assert confirmed.status is S.CONFIRMED


async def test_a_kiwi_total_above_the_fare_stops_before_the_booking_is_saved_or_charged(
    world: World, places: PlaceIndex
) -> None:
    """Kiwi's final total is checked when the traveller presses Pay (the booking is saved
    then, and only paid from our deposit after the charge): a risen fare is neither saved nor
    charged, and the traveller is told the new price."""
    tequila = KiwiStandIn()
    await tequila.start()
    kiwi = KiwiProvider(tequila.api_key, base_url=tequila.base_url, places=places)
    try:
        [offer, *_] = await kiwi.search(winter_trip(places))
        service = world.make_service(provider=kiwi)
        tequila.check_mode = "price_change"  # the airline's final total is 12% higher
        with pytest.raises(BookingError) as refused:
            await service.start_checkout(USER, offer, (traveller(),))
    finally:
        await kiwi.close()
        await tequila.close()

    assert tequila.saved_bookings == []
    assert tequila.confirmed == []
    assert "Nothing was charged" in str(refused.value)
    assert offer.price.format() in str(refused.value)
    assert [r for r in world.stripe.requests if r.path == "/v1/checkout/sessions"] == []
    assert world.notifier.sent == []


# a booking matched from metadata only --------------------------------------------------------
async def test_a_session_that_was_never_the_bookings_is_refused_and_alerted_once(
    world: World, demo_itineraries: list[Itinerary]
) -> None:
    target, _ = await world.service.start_checkout(USER, demo_itineraries[0], (traveller(),))
    _, session = await world.service.start_checkout(USER, demo_itineraries[-1], (traveller("Rui"),))
    forged = world.stripe.complete_session(session.id)
    forged["data"]["object"]["metadata"]["booking_id"] = target.id  # names another booking

    assert await world.stripe.deliver(world.webhook, forged, times=2) == [200, 200]

    assert (await world.booking(target.reference)).status is S.AWAITING_PAYMENT
    assert world.notifier.sent == []
    [alert] = world.alerts
    assert session.id in alert
    assert target.reference in alert


async def test_an_earlier_session_of_the_same_booking_is_its_own(
    world: World, itinerary: Itinerary
) -> None:
    booking, first = await world.service.start_checkout(USER, itinerary, (traveller(),))
    world.stripe.expire_session(first.id)  # the link ran out; the traveller asks for a new one
    _, second = await world.service.renew_checkout(USER, booking.reference)
    assert second.id != first.id
    # ...but had paid the old page in the very moment it closed (the stand-in reopens it so
    # that its payment can be made).
    world.stripe.sessions[first.id]["status"] = "open"

    await world.stripe.deliver(world.webhook, world.stripe.complete_session(first.id))

    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert world.alerts == []
    assert len(confirmations(world)) == 1


async def paid_twice(world: World, itinerary: Itinerary) -> tuple[str, str, dict[str, Any]]:
    """A booking confirmed on its renewed link, then its first link paid too (the stand-in
    reopens the expired page so that it can be paid): the booking's reference, the second
    payment's intent and its completion event."""
    booking, first = await world.service.start_checkout(USER, itinerary, (traveller(),))
    world.stripe.expire_session(first.id)
    _, second = await world.service.renew_checkout(USER, booking.reference)
    await world.stripe.deliver(world.webhook, world.stripe.complete_session(second.id))
    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    world.stripe.sessions[first.id]["status"] = "open"
    event = world.stripe.complete_session(first.id)
    return booking.reference, world.stripe.sessions[first.id]["payment_intent"], event


def duplicate_notices(world: World) -> list[str]:
    return [m.text for m in world.notifier.to(USER) if "You paid twice" in m.text]


async def test_a_second_payment_is_refunded_told_and_alerted_once_across_deliveries(
    world: World, itinerary: Itinerary
) -> None:
    reference, intent, event = await paid_twice(world, itinerary)

    assert await world.stripe.deliver(world.webhook, event, times=3) == [200] * 3
    async with webhook_for(world, world.make_service()) as other_worker:
        assert await world.stripe.deliver(other_worker, event) == [200]

    assert (await world.booking(reference)).status is S.CONFIRMED
    [refund] = world.stripe.refunds.values()
    assert refund["payment_intent"] == intent
    assert refund["amount"] == itinerary.price.amount
    [told] = duplicate_notices(world)
    assert itinerary.price.format() in told
    [alert] = world.alerts
    assert "refunded automatically" in alert
    assert len(confirmations(world)) == 1


async def test_a_second_payment_that_cannot_be_refunded_yet_is_retried_until_it_is(
    world: World, itinerary: Itinerary
) -> None:
    reference, intent, event = await paid_twice(world, itinerary)
    world.stripe.outages["POST /v1/refunds"] = 10

    for _ in range(2):
        [status] = await world.stripe.deliver(world.webhook, event)
        assert status >= 500  # not settled: Stripe delivers it again
    assert world.stripe.refunds == {}
    assert duplicate_notices(world) == []
    [alert] = world.alerts  # once, however many deliveries fail
    assert "NOT refunded yet" in alert

    world.stripe.outages.clear()
    assert await world.stripe.deliver(world.webhook, event) == [200]
    [refund] = world.stripe.refunds.values()
    assert refund["payment_intent"] == intent
    assert len(duplicate_notices(world)) == 1
    assert len(world.alerts) == 2
    assert "refunded automatically" in world.alerts[1]
    assert (await world.booking(reference)).status is S.CONFIRMED


async def test_an_airline_cancellation_whose_refund_failed_is_refunded_by_the_next_delivery(
    world: World, places: PlaceIndex
) -> None:
    """Duffel delivers again what was not accepted: the refund it owes is made then, once."""
    duffel = DuffelStandIn()
    await duffel.start()
    provider = DuffelProvider(duffel.token, base_url=duffel.base_url, backoff=0.01)
    service = world.make_service(provider=provider)
    app = web.Application()
    add_provider_routes(app, service, load_settings(duffel_webhook_secret=duffel.webhook_secret))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    duffel.webhook_url = str(server.make_url("/duffel/webhook"))
    try:
        [offer, *_] = await provider.search(winter_trip(places))
        booking, session = await service.start_checkout(USER, offer, (duffel_traveller(),))
        async with webhook_for(world, service) as stripe_webhook:
            await world.stripe.deliver(stripe_webhook, world.stripe.complete_session(session.id))
        assert (await world.booking(booking.reference)).status is S.CONFIRMED
        world.stripe.outages["POST /v1/refunds"] = 10  # Stripe's refunds are down

        event_id = await duffel.airline_cancels(duffel.only_order()["id"], times=2)
        assert [status for _, status in duffel.deliveries] == [503, 503]
        assert (await world.booking(booking.reference)).status is S.CANCELLED
        assert world.stripe.refunds == {}
        [waiting] = [m.text for m in world.notifier.to(USER) if "airline cancelled" in m.text]
        assert "being arranged" in waiting
        assert len(world.alerts) == 1

        world.stripe.outages.clear()
        await duffel.redeliver(event_id, times=2)
    finally:
        await server.close()
        await provider.close()
        await duffel.close()

    assert [status for _, status in duffel.deliveries[2:]] == [200, 200]
    refunded = await world.booking(booking.reference)
    assert refunded.status is S.REFUNDED
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == refunded.amount.amount
    told = [m.text for m in world.notifier.to(USER) if "airline cancelled" in m.text]
    assert len(told) == 2
    assert "on its way back" in told[1]


async def test_a_ticketing_failure_whose_refund_failed_is_refunded_by_a_later_sweep(
    world: World, itinerary: Itinerary
) -> None:
    unticketable = itinerary.model_copy(update={"provider": "kiwi"})  # the demo can't ticket it
    booking, session = await world.service.start_checkout(USER, unticketable, (traveller(),))
    world.stripe.outages["POST /v1/refunds"] = 10
    await world.stripe.deliver(world.webhook, world.stripe.complete_session(session.id))
    assert (await world.booking(booking.reference)).status is S.FAILED
    [promised] = world.notifier.to(USER)
    assert "will be refunded in full" in promised.text
    world.stripe.outages.clear()

    soon = world.make_service()  # before stuck_after: the first attempt may still be going
    assert await soon.reconcile() == 0
    assert world.stripe.refunds == {}
    sweepers = [world.make_service(clock=later(hours)) for hours in (1, 1, 2)]
    settled = await asyncio.gather(*(sweeper.reconcile() for sweeper in sweepers[:2]))
    assert sorted(settled) == [0, 1]
    assert await sweepers[2].reconcile() == 0

    refunded = await world.booking(booking.reference)
    assert refunded.status is S.REFUNDED
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == booking.amount.amount
    [_, sent] = world.notifier.to(USER)
    assert "has been sent" in sent.text
    assert booking.amount.format() in sent.text
    assert len(world.alerts) == 1  # the first failure, not every retry


# reconciliation asks the gateway -------------------------------------------------------------
async def test_an_expired_booking_whose_session_was_paid_is_confirmed_by_the_sweep(
    world: World, itinerary: Itinerary
) -> None:
    booking, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    world.stripe.complete_session(session.id)  # paid at the deadline; the event never came
    assert await world.storage.transition(booking.id, S.AWAITING_PAYMENT, S.EXPIRED)

    sweeper = world.make_service(clock=later())
    assert await sweeper.reconcile() == 1
    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(confirmations(world)) == 1


async def test_an_expired_unpaid_session_is_asked_about_once(
    world: World, itinerary: Itinerary
) -> None:
    booking, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    world.stripe.expire_session(session.id)
    assert await world.storage.transition(booking.id, S.AWAITING_PAYMENT, S.EXPIRED)

    def reads() -> int:
        return sum(1 for r in world.stripe.requests if r.method == "GET" and session.id in r.path)

    before = reads()
    for minutes in (40, 41, 42):
        await world.make_service(
            clock=lambda m=minutes: utcnow() + timedelta(minutes=m)
        ).reconcile()
    assert reads() - before == 1
    assert (await world.booking(booking.reference)).status is S.EXPIRED
    assert world.notifier.sent == []
