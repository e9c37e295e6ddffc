"""The booking service end to end with Stripe: SQLite storage, demo fares, the Stripe stand-in
and the real webhook route on a loopback server.

Only Stripe is replaced (by the stand-in); the traveller's chat is a recording ``Notifier``.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.web_payments import add_payment_routes
from services.bookings import (
    BookingError,
    BookingService,
    CancellationRefusedError,
    NothingToRefundError,
    RenewalRefusedError,
    UnknownBookingError,
)
from services.flights.demo import DemoProvider
from services.flights.kiwi import KiwiProvider
from services.flights.places import PlaceIndex
from services.messages import Message
from services.models import (
    Booking,
    BookingStatus,
    Gender,
    Itinerary,
    PassengerCategory,
    SearchQuery,
    Traveller,
    today_anywhere,
    utcnow,
)
from services.money import Money
from services.payments.stripe import StripeGateway
from services.storage.base import Storage
from tests.standins.kiwi import KiwiStandIn
from tests.standins.stripe import StripeStandin
from tests.support.botkit import running_bot
from tests.support.fares import winter_trip
from tests.support.supabase_stack import StorageFactory
from tests.test_conversation_e2e import TRAVELLER, TRAVELLER_REST, to_results
from tests.test_workers import new_user

S = BookingStatus
USER = 4242
OTHER_USER = 5151


class RecordingNotifier:
    """The traveller's chat: the ``Notifier`` port, recording what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Message]] = []

    async def notify(self, user_id: int, message: Message) -> bool:
        self.sent.append((user_id, message))
        return True

    def to(self, user_id: int) -> list[Message]:
        return [message for uid, message in self.sent if uid == user_id]

    def containing(self, text: str) -> list[Message]:
        return [message for _, message in self.sent if text in message.text]


def traveller(first: str = "Ana", last: str = "Silva") -> Traveller:
    return Traveller(
        category=PassengerCategory.ADULT,
        first_name=first,
        last_name=last,
        birth_date=date(1990, 5, 17),
        gender=Gender.FEMALE,
        nationality="PT",
        passport_number="CA1234567",
        passport_expiry=date(2035, 8, 20),
        email="ana@example.com",
    )


@pytest.fixture(scope="session")
def places() -> PlaceIndex:
    return PlaceIndex.default()


@pytest.fixture(scope="session")
async def demo_itineraries(places: PlaceIndex) -> list[Itinerary]:
    """Lisbon → Tokyo demo fares 40 days ahead, as a traveller would have picked from."""
    query = SearchQuery(
        origin=places.airport_location("LIS"),
        destination=places.airport_location("NRT"),
        departure=today_anywhere() + timedelta(days=40),
    )
    return await DemoProvider(places=places).search(query)


@pytest.fixture
def itinerary(demo_itineraries: list[Itinerary]) -> Itinerary:
    return demo_itineraries[0]


@pytest.fixture
async def stripe_api() -> AsyncIterator[StripeStandin]:
    async with StripeStandin() as standin:
        yield standin


@dataclass
class World:
    """Everything a payment test touches."""

    service: BookingService
    gateway: StripeGateway
    storage: Storage
    stripe: StripeStandin
    notifier: RecordingNotifier
    alerts: list[str]
    webhook: str
    make_service: Callable[..., BookingService] = field(repr=False)

    async def booking(self, reference: str) -> Booking:
        found = await self.storage.get_booking_by_reference(reference, user_id=None)
        assert found is not None
        return found


def success_url(booking: Booking) -> str:
    return f"https://t.me/travel_test_bot?start=paid_{booking.reference}"


def cancel_url(booking: Booking) -> str:
    return f"https://t.me/travel_test_bot?start=booking_{booking.reference}"


@pytest.fixture
async def world(
    storage: Storage, stripe_api: StripeStandin, places: PlaceIndex
) -> AsyncIterator[World]:
    """Runs on SQLite and on Supabase storage (the ``storage`` fixture of
    tests/support/supabase_stack.py is parametrized over both adapters)."""
    gateway = StripeGateway(
        stripe_api.api_key, stripe_api.webhook_secret, api_base=stripe_api.base_url
    )
    notifier = RecordingNotifier()
    alerts: list[str] = []

    async def alert(text: str) -> None:
        alerts.append(text)

    def make_service(**overrides: Any) -> BookingService:
        provider = overrides.pop("provider", None) or DemoProvider(places=places)
        return BookingService(
            storage,
            provider,
            gateway,
            notifier,
            success_url=success_url,
            cancel_url=cancel_url,
            alert_admins=alert,
            **overrides,
        )

    service = make_service()
    app = web.Application()
    add_payment_routes(app, service, gateway)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield World(
            service=service,
            gateway=gateway,
            storage=storage,
            stripe=stripe_api,
            notifier=notifier,
            alerts=alerts,
            webhook=str(server.make_url("/stripe/webhook")),
            make_service=make_service,
        )
    finally:
        await server.close()
        await gateway.close()


async def checkout(world: World, itinerary: Itinerary) -> tuple[Booking, str]:
    booking, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    return booking, session.id


async def pay_and_confirm(world: World, itinerary: Itinerary) -> Booking:
    booking, session_id = await checkout(world, itinerary)
    assert await world.stripe.deliver(world.webhook, world.stripe.complete_session(session_id)) == [
        200
    ]
    confirmed = await world.booking(booking.reference)
    assert confirmed.status is S.CONFIRMED
    return confirmed


# creating the checkout -----------------------------------------------------------------------
async def test_checkout_session_matches_the_booking(world: World, itinerary: Itinerary) -> None:
    before = time.time()
    booking, session = await world.service.start_checkout(USER, itinerary, (traveller(),))

    assert booking.status is S.AWAITING_PAYMENT
    assert booking.amount == itinerary.price
    assert booking.checkout_session_id == session.id
    assert booking.payment_deadline == session.expires_at
    stored = world.stripe.sessions[session.id]
    assert stored["amount_total"] == itinerary.price.amount
    assert stored["currency"] == itinerary.price.currency.lower()
    assert stored["client_reference_id"] == booking.reference
    assert stored["metadata"] == {"booking_id": booking.id, "reference": booking.reference}
    assert stored["success_url"] == success_url(booking)
    assert 30 * 60 <= stored["expires_at"] - before <= 32 * 60
    assert world.stripe.requests[0].idempotency_key == f"checkout:{booking.id}:1"


async def test_double_tap_on_pay_makes_one_booking_and_one_session(
    world: World, itinerary: Itinerary
) -> None:
    first = await world.service.start_checkout(USER, itinerary, (traveller(),))
    taps = await asyncio.gather(
        *(world.service.start_checkout(USER, itinerary, (traveller(),)) for _ in range(5))
    )
    assert {b.id for b, _ in taps} == {first[0].id}
    assert {s.id for _, s in taps} == {first[1].id}
    assert len(world.stripe.sessions) == 1
    assert len(await world.storage.list_bookings(USER)) == 1


async def test_other_travellers_make_another_booking(world: World, itinerary: Itinerary) -> None:
    first, _ = await world.service.start_checkout(USER, itinerary, (traveller(),))
    second, _ = await world.service.start_checkout(USER, itinerary, (traveller("Rui"),))
    assert first.id != second.id
    assert len(world.stripe.sessions) == 2


async def test_a_departed_flight_cannot_be_paid(world: World, itinerary: Itinerary) -> None:
    late = world.make_service(clock=lambda: itinerary.departure + timedelta(minutes=1))
    with pytest.raises(BookingError, match="already left"):
        await late.start_checkout(USER, itinerary, (traveller(),))
    assert world.stripe.sessions == {}


# the webhook: exactly once -------------------------------------------------------------------
async def test_one_event_delivered_20_times_at_once_confirms_once(
    world: World, itinerary: Itinerary
) -> None:
    booking, session_id = await checkout(world, itinerary)
    event = world.stripe.complete_session(session_id)

    statuses = await world.stripe.deliver(world.webhook, event, times=20)

    assert statuses == [200] * 20
    confirmed = await world.booking(booking.reference)
    assert confirmed.status is S.CONFIRMED
    assert confirmed.payment_intent_id == world.stripe.sessions[session_id]["payment_intent"]
    messages = world.notifier.to(USER)
    assert len(messages) == 1
    assert "Booking confirmed" in messages[0].text
    assert booking.reference in messages[0].text
    assert "LIS" in messages[0].text
    assert "NRT" in messages[0].text
    assert messages[0].buttons[0][0].action == "!booking"
    assert messages[0].buttons[0][0].arg == booking.reference
    events = await world.storage.list_payment_events(booking.id)
    assert [e[0] for e in events] == [event["id"]]


async def test_20_distinct_events_for_one_booking_confirm_once(
    world: World, itinerary: Itinerary
) -> None:
    booking, session_id = await checkout(world, itinerary)
    completed = world.stripe.complete_session(session_id)
    others = [
        world.stripe.session_event(
            "checkout.session.completed" if i % 2 else "checkout.session.async_payment_succeeded",
            session_id,
        )
        for i in range(19)
    ]

    statuses = await world.stripe.deliver_all_at_once(world.webhook, [completed, *others])

    assert statuses == [200] * 20
    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(world.notifier.containing("Booking confirmed")) == 1
    assert len(world.notifier.sent) == 1
    assert len(await world.storage.list_payment_events(booking.id)) == 20


async def test_two_workers_sharing_the_database_confirm_once(
    world: World,
    itinerary: Itinerary,
    storage_factory: StorageFactory,
    places: PlaceIndex,
) -> None:
    """Stripe's deliveries spread over two bot processes behind a load balancer."""
    second_storage = await storage_factory.open()
    gateway = StripeGateway(
        world.stripe.api_key, world.stripe.webhook_secret, api_base=world.stripe.base_url
    )
    second = BookingService(
        second_storage,
        DemoProvider(places=places),
        gateway,
        world.notifier,
        success_url=success_url,
        cancel_url=cancel_url,
    )
    app = web.Application()
    add_payment_routes(app, second, gateway)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        booking, session_id = await checkout(world, itinerary)
        completed = world.stripe.complete_session(session_id)
        retry = world.stripe.session_event("checkout.session.completed", session_id)
        other_url = str(server.make_url("/stripe/webhook"))
        statuses = await asyncio.gather(
            world.stripe.deliver(world.webhook, completed, times=10),
            world.stripe.deliver(other_url, completed, times=10),
            world.stripe.deliver(other_url, retry, times=5),
        )
    finally:
        await server.close()
        await gateway.close()

    assert [s for batch in statuses for s in batch] == [200] * 25
    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(world.notifier.sent) == 1


@pytest.mark.parametrize("delivery", ["bad signature", "unsigned", "late", "not json"])
async def test_unverifiable_deliveries_get_400_and_change_nothing(
    world: World, itinerary: Itinerary, delivery: str
) -> None:
    booking, session_id = await checkout(world, itinerary)
    event = world.stripe.complete_session(session_id)
    if delivery == "bad signature":
        status = await world.stripe.deliver_bad_signature(world.webhook, event)
    elif delivery == "unsigned":
        status = await world.stripe.deliver_unsigned(world.webhook, event)
    elif delivery == "late":
        status = await world.stripe.deliver_late(world.webhook, event)
    else:
        body = b"{this is not json"
        status = await world.stripe.post(world.webhook, body, world.stripe.sign(body))

    assert status == 400
    unchanged = await world.booking(booking.reference)
    assert unchanged.status is S.AWAITING_PAYMENT
    assert unchanged.payment_intent_id is None
    assert world.notifier.sent == []
    assert await world.storage.list_payment_events(booking.id) == []


@pytest.mark.parametrize(
    "metadata", [{}, {"booking_id": "not-a-booking-id"}, {"booking_id": str(uuid.uuid4())}]
)
async def test_event_for_no_booking_of_ours_is_acknowledged(
    world: World, metadata: dict[str, str]
) -> None:
    foreign = world.stripe.make_event(
        "checkout.session.completed",
        {
            "id": "cs_test_elsewhere",
            "object": "checkout.session",
            "status": "complete",
            "payment_status": "paid",
            "amount_total": 100,
            "currency": "eur",
            "metadata": metadata,
            "expires_at": int(time.time()) + 3600,
            "payment_intent": "pi_test_elsewhere",
        },
    )
    assert await world.stripe.deliver(world.webhook, foreign, times=2) == [200, 200]
    assert world.notifier.sent == []


# expiry and new links ------------------------------------------------------------------------
async def test_expired_session_then_a_new_link_that_confirms(
    world: World, itinerary: Itinerary
) -> None:
    booking, session_id = await checkout(world, itinerary)
    assert await world.stripe.deliver(world.webhook, world.stripe.expire_session(session_id)) == [
        200
    ]

    expired = await world.booking(booking.reference)
    assert expired.status is S.EXPIRED
    [told] = world.notifier.to(USER)
    assert "expired" in told.text
    button = told.buttons[0][0]
    assert (button.action, button.arg) == ("!renew", booking.reference)

    renewed, session = await world.service.renew_checkout(USER, booking.reference)
    assert session.id != session_id
    assert session.status == "open"
    assert session.amount == booking.amount
    assert renewed.status is S.EXPIRED  # until the money comes: expired → paid is allowed
    assert renewed.checkout_session_id == session.id
    assert world.stripe.requests[-1].idempotency_key == f"checkout:{booking.id}:renewal:1"
    _again, same = await world.service.renew_checkout(USER, booking.reference)
    assert same.id == session.id  # a link still good is sent again

    assert await world.stripe.deliver(world.webhook, world.stripe.complete_session(session.id)) == [
        200
    ]
    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(world.notifier.containing("Booking confirmed")) == 1


async def test_completed_event_for_a_booking_already_expired_still_confirms(
    world: World, itinerary: Itinerary
) -> None:
    """Paid at the last second while our side gave up on it: money taken wins."""
    booking, session_id = await checkout(world, itinerary)
    completed = world.stripe.complete_session(session_id)
    # the overdue sweep gave up on it a moment before
    assert await world.storage.transition(booking.id, S.AWAITING_PAYMENT, S.EXPIRED)

    assert await world.stripe.deliver(world.webhook, completed) == [200]

    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(world.notifier.containing("Booking confirmed")) == 1


@pytest.mark.parametrize("order", ["completed first", "expired first"])
async def test_a_stale_expired_event_changes_nothing(
    world: World, itinerary: Itinerary, order: str
) -> None:
    booking, session_id = await checkout(world, itinerary)
    stale = world.stripe.session_event("checkout.session.expired", session_id)
    stale["data"]["object"]["status"] = "expired"
    completed = world.stripe.complete_session(session_id)

    if order == "completed first":
        await world.stripe.deliver_in_order(world.webhook, [completed, stale])
    else:
        await world.stripe.deliver_out_of_order(world.webhook, [completed, stale])

    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(world.notifier.sent) == 1
    assert world.notifier.containing("Booking confirmed")


async def test_abandoning_closes_the_link(world: World, itinerary: Itinerary) -> None:
    booking, session_id = await checkout(world, itinerary)
    assert await world.service.abandon(USER, booking.reference) is True
    assert world.stripe.sessions[session_id]["status"] == "expired"
    assert (await world.booking(booking.reference)).status is S.CANCELLED
    assert await world.service.abandon(USER, booking.reference) is False
    # Stripe's own expiry event follows; the traveller already knows, nothing more is sent.
    await world.stripe.deliver(
        world.webhook, world.stripe.events_of("checkout.session.expired")[-1]
    )
    assert world.notifier.sent == []
    with pytest.raises(UnknownBookingError):
        await world.service.abandon(OTHER_USER, booking.reference)


async def test_renewing_a_link_that_was_paid_confirms_instead(
    world: World, itinerary: Itinerary
) -> None:
    booking, session_id = await checkout(world, itinerary)
    world.stripe.complete_session(session_id)  # its webhook never arrives
    await world.storage.transition(booking.id, S.AWAITING_PAYMENT, S.EXPIRED)  # our side gave up

    with pytest.raises(RenewalRefusedError, match="already paid"):
        await world.service.renew_checkout(USER, booking.reference)

    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(world.stripe.sessions) == 1


@pytest.mark.parametrize("change", ["sold out", "price changed"])
async def test_a_new_link_rechecks_the_fare(
    world: World, itinerary: Itinerary, places: PlaceIndex, change: str
) -> None:
    booking, session_id = await checkout(world, itinerary)
    await world.stripe.deliver(world.webhook, world.stripe.expire_session(session_id))
    if change == "sold out":
        provider = DemoProvider(places=places, sold_out=[itinerary.id])
        expected = "no longer available"
    else:
        dearer = itinerary.price + Money(amount=5_000, currency=itinerary.price.currency)
        provider = DemoProvider(places=places, price_changes={itinerary.id: dearer})
        expected = f"to {dearer.format()}"
    service = world.make_service(provider=provider)

    with pytest.raises(RenewalRefusedError, match=expected):
        await service.renew_checkout(USER, booking.reference)
    assert len(world.stripe.sessions) == 1


async def test_no_new_link_for_a_confirmed_booking(world: World, itinerary: Itinerary) -> None:
    booking = await pay_and_confirm(world, itinerary)
    with pytest.raises(RenewalRefusedError, match="no payment to make"):
        await world.service.renew_checkout(USER, booking.reference)


async def test_overdue_bookings_expire_without_a_webhook(
    world: World, itinerary: Itinerary
) -> None:
    booking, _ = await checkout(world, itinerary)
    paid_booking, paid_session = await world.service.start_checkout(
        USER, itinerary, (traveller("Rui"),)
    )
    world.stripe.complete_session(paid_session.id)  # paid, but its webhook got lost
    world.stripe.advance(31 * 60)
    later = world.make_service(clock=lambda: utcnow() + timedelta(minutes=31))

    assert await later.expire_overdue() == 1

    assert (await world.booking(booking.reference)).status is S.EXPIRED
    assert (await world.booking(paid_booking.reference)).status is S.CONFIRMED
    assert len(world.notifier.containing("expired")) == 1
    assert len(world.notifier.containing("Booking confirmed")) == 1


# delayed payment methods ---------------------------------------------------------------------
async def test_delayed_payment_confirms_when_it_succeeds(
    world: World, itinerary: Itinerary
) -> None:
    booking, session_id = await checkout(world, itinerary)
    completed = world.stripe.complete_session(session_id, payment_status="unpaid")
    await world.stripe.deliver(world.webhook, completed)
    assert (await world.booking(booking.reference)).status is S.AWAITING_PAYMENT
    assert world.notifier.sent == []

    settled = world.stripe.settle_async_payment(session_id, succeeded=True)
    await world.stripe.deliver(world.webhook, settled)
    assert (await world.booking(booking.reference)).status is S.CONFIRMED
    assert len(world.notifier.sent) == 1


async def test_delayed_payment_that_fails_is_told_with_a_retry(
    world: World, itinerary: Itinerary
) -> None:
    booking, session_id = await checkout(world, itinerary)
    await world.stripe.deliver(
        world.webhook, world.stripe.complete_session(session_id, payment_status="unpaid")
    )
    failed = world.stripe.settle_async_payment(session_id, succeeded=False)
    await world.stripe.deliver(world.webhook, failed, times=3)

    assert (await world.booking(booking.reference)).status is S.AWAITING_PAYMENT
    [told] = world.notifier.to(USER)
    assert "did not go through" in told.text
    assert told.buttons[0][0].action == "!renew"

    _, session = await world.service.renew_checkout(USER, booking.reference)
    assert session.id != session_id
    await world.stripe.deliver(world.webhook, world.stripe.complete_session(session.id))
    assert (await world.booking(booking.reference)).status is S.CONFIRMED


# ticketing failure ---------------------------------------------------------------------------
async def test_ticketing_failure_refunds_and_tells_the_traveller(
    world: World, itinerary: Itinerary
) -> None:
    # The demo provider only tickets demo fares: one it cannot ticket fails after payment.
    unticketable = itinerary.model_copy(update={"provider": "kiwi"})
    booking, session = await world.service.start_checkout(USER, unticketable, (traveller(),))
    completed = world.stripe.complete_session(session.id)

    assert await world.stripe.deliver(world.webhook, completed, times=5) == [200] * 5

    refunded = await world.booking(booking.reference)
    assert refunded.status is S.REFUNDED
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == booking.amount.amount
    assert refund["payment_intent"] == refunded.payment_intent_id
    [told] = world.notifier.to(USER)
    assert "could not issue the ticket" in told.text
    assert booking.amount.format() in told.text
    events = [kind for _, kind, _ in await world.storage.list_payment_events(booking.id)]
    assert events == ["checkout.session.completed", "refund.created"]
    # Stripe's own refund notice afterwards changes nothing and tells nobody again.
    await world.stripe.deliver(world.webhook, world.stripe.events_of("charge.refunded")[-1])
    assert len(world.notifier.sent) == 1


async def test_an_unanswered_kiwi_payment_confirmation_is_left_to_a_person(
    world: World, places: PlaceIndex
) -> None:
    # Kiwi may have issued the ticket from our deposit: refunding would lose the fare.
    tequila = KiwiStandIn()
    await tequila.start()
    kiwi = KiwiProvider(tequila.api_key, base_url=tequila.base_url, places=places, timeout=0.5)
    service = world.make_service(provider=kiwi)
    app = web.Application()
    add_payment_routes(app, service, world.gateway)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        [offer, *_] = await kiwi.search(winter_trip(places))
        booking, session = await service.start_checkout(USER, offer, (traveller(),))
        tequila.confirm_outcome = "error"
        completed = world.stripe.complete_session(session.id)
        webhook = str(server.make_url("/stripe/webhook"))
        assert await world.stripe.deliver(webhook, completed, times=3) == [200] * 3
    finally:
        await server.close()
        await kiwi.close()
        await tequila.close()

    paid = await world.booking(booking.reference)
    assert paid.status is S.PAID
    assert world.stripe.refunds == {}
    [told] = world.notifier.to(USER)
    assert "Issuing the ticket is taking a little longer" in told.text
    [alert] = world.alerts
    assert "needs manual ticketing" in alert
    assert "provider booking 4000001" in alert


# cancelling and refunding --------------------------------------------------------------------
async def test_traveller_cancels_and_is_refunded(world: World, itinerary: Itinerary) -> None:
    booking = await pay_and_confirm(world, itinerary)

    cancelled = await world.service.cancel_by_user(USER, booking.reference)

    assert cancelled.booking.status is S.REFUNDED
    assert cancelled.refunded == booking.amount
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == booking.amount.amount
    assert refund["reason"] == "requested_by_customer"
    history = [kind for _, kind, _ in await world.storage.list_payment_events(booking.id)]
    assert history[-1] == "refund.created"
    await world.stripe.deliver(world.webhook, world.stripe.events_of("charge.refunded")[-1])
    assert (await world.booking(booking.reference)).status is S.REFUNDED
    with pytest.raises(CancellationRefusedError, match="already cancelled"):
        await world.service.cancel_by_user(USER, booking.reference)
    assert len(world.stripe.refunds) == 1


async def test_cancelling_is_refused_clearly(world: World, itinerary: Itinerary) -> None:
    booking, _ = await checkout(world, itinerary)
    with pytest.raises(CancellationRefusedError, match="not paid yet"):
        await world.service.cancel_by_user(USER, booking.reference)
    with pytest.raises(UnknownBookingError, match="can't find"):
        await world.service.cancel_by_user(OTHER_USER, booking.reference)

    confirmed = await pay_and_confirm(world, itinerary.model_copy(update={"id": "other"}))
    after_departure = world.make_service(
        clock=lambda: confirmed.itinerary.departure + timedelta(hours=1)
    )
    with pytest.raises(CancellationRefusedError, match="left on"):
        await after_departure.cancel_by_user(USER, confirmed.reference)
    assert world.stripe.refunds == {}


async def test_admin_refund_in_full_tells_the_traveller_once(
    world: World, itinerary: Itinerary
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    world.notifier.sent.clear()

    refunded = await world.service.refund_by_admin(
        booking.reference, amount=None, reason="schedule change", admin_id=7
    )

    assert refunded.status is S.REFUNDED
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == booking.amount.amount
    assert refund["metadata"]["note"] == "schedule change"
    [told] = world.notifier.to(USER)
    assert booking.amount.format() in told.text
    [audit] = await world.storage.list_audit()
    assert (audit.admin_id, audit.action, audit.target) == (7, "refund", booking.reference)

    await world.stripe.deliver(world.webhook, world.stripe.events_of("charge.refunded")[-1])
    with pytest.raises(NothingToRefundError, match="Nothing to refund"):
        await world.service.refund_by_admin(booking.reference, amount=None, reason=None, admin_id=7)
    assert len(world.notifier.sent) == 1
    assert len(world.stripe.refunds) == 1


async def test_admin_partial_then_full_refund(world: World, itinerary: Itinerary) -> None:
    booking = await pay_and_confirm(world, itinerary)
    part = Money(amount=1_000, currency=booking.amount.currency)

    after_part = await world.service.refund_by_admin(
        booking.reference, amount=part, reason=None, admin_id=7
    )
    assert after_part.status is S.CONFIRMED
    rest = await world.service.refund_by_admin(
        booking.reference, amount=None, reason=None, admin_id=7
    )
    assert rest.status is S.REFUNDED
    amounts = sorted(r["amount"] for r in world.stripe.refunds.values())
    assert amounts == sorted([1_000, booking.amount.amount - 1_000])
    assert len(world.notifier.containing("refund")) == 2


@pytest.mark.parametrize("amount", [0, -5, 10**9])
async def test_admin_refund_amount_is_checked(
    world: World, itinerary: Itinerary, amount: int
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    with pytest.raises(NothingToRefundError):
        await world.service.refund_by_admin(
            booking.reference,
            amount=Money(amount=amount, currency=booking.amount.currency),
            reason=None,
            admin_id=7,
        )
    with pytest.raises(NothingToRefundError, match="paid in"):
        await world.service.refund_by_admin(
            booking.reference, amount=Money(amount=100, currency="JPY"), reason=None, admin_id=7
        )
    assert world.stripe.refunds == {}
    assert (await world.booking(booking.reference)).status is S.CONFIRMED


async def test_nothing_to_refund_is_a_clear_refusal(world: World, itinerary: Itinerary) -> None:
    booking, _ = await checkout(world, itinerary)
    with pytest.raises(NothingToRefundError) as refused:
        await world.service.refund_by_admin(booking.reference, amount=None, reason=None, admin_id=7)
    assert str(refused.value) == (
        f"Nothing to refund on booking {booking.reference}: no payment was taken "
        "(status: Awaiting payment)."
    )
    with pytest.raises(UnknownBookingError):
        await world.service.refund_by_admin("ZZZZZZ", amount=None, reason=None, admin_id=7)
    assert world.notifier.sent == []


# the amount ----------------------------------------------------------------------------------
async def test_a_payment_of_another_amount_is_not_confirmed(
    world: World, itinerary: Itinerary
) -> None:
    booking, session_id = await checkout(world, itinerary)
    world.stripe.sessions[session_id]["amount_total"] = 100  # not what the booking costs
    event = world.stripe.complete_session(session_id)

    assert await world.stripe.deliver(world.webhook, event, times=2) == [200, 200]

    after = await world.booking(booking.reference)
    assert after.status not in (S.PAID, S.CONFIRMED)
    # The money goes back, in full, and the traveller and the admins hear of it once.
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == 100
    [told] = world.notifier.to(USER)
    assert "did not match" in told.text
    assert "€1.00" in told.text
    assert "refunded" in told.text
    assert told.buttons[0][0].action == "!renew"
    [alert] = world.alerts
    assert booking.reference in alert
    assert "refunded" in alert


async def _provider_total(tequila: KiwiStandIn, booking_token: str) -> Money:
    """What Kiwi itself quotes for the offer now, asked over its API as the bot would."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{tequila.base_url}/v2/booking/check_flights",
            params={"booking_token": booking_token, "currency": "EUR", "bnum": "0", "pnum": "1"},
            headers={"apikey": tequila.api_key},
        ) as answer,
    ):
        body = await answer.json()
    return Money.from_decimal(str(body["conversion"]["amount"]), body["conversion"]["currency"])


def _tampered(data: str, **changes: str) -> str:
    version, action, arg = data.split("|", 2)
    return "|".join(
        (changes.get("version", version), changes.get("action", action), changes.get("arg", arg))
    )


async def test_nothing_the_traveller_sends_reaches_the_amount(
    tmp_path: Path, stripe_api: StripeStandin, places: PlaceIndex
) -> None:
    """A traveller drives the real bot (sandbox Telegram, Kiwi and Stripe stand-ins) and
    tampers with buttons and types amounts on the way (24 turns: under the bot's rate limit); what Stripe is asked to charge is
    Kiwi's own quote for the offer, which rose after the search (so not the price shown in the
    results either)."""
    tequila = KiwiStandIn(check_mode="price_change")
    await tequila.start()
    kiwi = KiwiProvider(tequila.api_key, base_url=tequila.base_url, places=places)
    stripe_settings: dict[str, Any] = {
        "stripe_secret_key": stripe_api.api_key,
        "stripe_webhook_secret": stripe_api.webhook_secret,
        "stripe_api_base": stripe_api.base_url,
    }
    try:
        async with running_bot(tmp_path, provider=kiwi, **stripe_settings) as bot:
            user = new_user()
            await to_results(bot, user)
            results = bot.buttons(user)
            [(_, first, message_id)] = [b for b in results if b[0] == "1"]
            [(_, second, _)] = [b for b in results if b[0] == "2"]
            assert first is not None
            assert second is not None
            fingerprint = first.rsplit(".", 1)[1]
            index_two = second.split("|")[2].split(".")[0]
            forged = [
                _tampered(first, arg=first.split("|", 2)[2] + "|amount=1"),
                _tampered(first, arg=f"{index_two}.{fingerprint}"),  # another row, same check
                _tampered(first, arg="0.x;price=0.01"),
                _tampered(first, action="pay"),  # a later step's button, pressed now
                "!abandon|AAAAAA",
            ]
            for data in forged:
                await bot.press_raw(user, message_id, data)
                assert (await bot.state(user)).state == "search:results", data
            for text in ("€0.01", "pay 1 EUR"):
                await bot.say(user, text)
                assert (await bot.state(user)).state == "search:results", text
            # The number opens the booking: Kiwi's check raised the fare, shown beside the old.
            checked = await bot.press(user, "1")
            was = re.search(r"it was (\S+), it is now", checked.text)
            assert was is not None, checked.text
            shown = was.group(1)  # the price the results showed
            await bot.say(user, "amount: 1 EUR")
            await bot.press(user, "Continue at")
            for answer in TRAVELLER:
                await bot.say(user, answer)
            await bot.press(user, "Female")
            for answer in TRAVELLER_REST:
                await bot.say(user, answer)
            await bot.press(user, "Skip")
            await bot.say(user, "charge me €1 instead")
            [(_, pay, review_id)] = [b for b in bot.buttons(user) if b[0].startswith("Pay ")]
            assert pay is not None
            reply = await bot.press_raw(user, review_id, _tampered(pay, arg="amount=1"))

            [session] = stripe_api.sessions.values()
            [booking] = await bot.runtime.adapters.storage.list_bookings(user)
            assert booking.itinerary.booking_token is not None
            quoted = await _provider_total(tequila, booking.itinerary.booking_token)
            assert quoted.format() not in shown  # the quote is not the price the results showed
            assert booking.amount == quoted
            assert (session["amount_total"], session["currency"]) == (quoted.amount, "eur")
            [create] = [r for r in stripe_api.requests if r.path == "/v1/checkout/sessions"]
            price_data = create.params["line_items"][0]["price_data"]
            assert price_data["unit_amount"] == str(quoted.amount)
            labels = [button.label for row in reply.last.buttons for button in row]
            assert f"💳 Pay {quoted.format()} securely" in labels
    finally:
        await kiwi.close()
        await tequila.close()


async def test_confirmation_escapes_what_the_traveller_typed(
    world: World, itinerary: Itinerary
) -> None:
    _, session = await world.service.start_checkout(
        USER, itinerary, (traveller("Ana", "<script>&"),)
    )
    await world.stripe.deliver(world.webhook, world.stripe.complete_session(session.id))
    [told] = world.notifier.to(USER)
    assert "<script>" not in told.text
    assert "&lt;script&gt;&amp;" in told.text
    assert "CA1234567" not in told.text
    assert "•••• 4567" in told.text
