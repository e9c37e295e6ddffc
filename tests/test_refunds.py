"""Refunds are bounded by what was paid and reach Stripe once, whoever asks and however often.

The booking service with the Stripe stand-in (and once with the sandbox gateway), on SQLite and
on the Supabase stack: an admin's refunds and the traveller's cancellation, in sequence, at the
same moment on two workers, and after Stripe failed an attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import unused_port

from services.bookings import (
    REFUND_CLAIM_STALE,
    BookingError,
    BookingService,
    NothingToRefundError,
    RefundFailedError,
)
from services.flights.demo import DemoProvider
from services.flights.places import PlaceIndex
from services.models import Booking, BookingStatus, Itinerary, utcnow
from services.money import Money
from services.payments.base import PaymentError
from services.payments.sandbox import SandboxGateway
from services.storage.sqlite import SQLiteStorage
from tests.support.supabase_stack import StorageFactory
from tests.test_bookings import (  # noqa: F401 - fixtures
    USER,
    RecordingNotifier,
    World,
    cancel_url,
    demo_itineraries,
    itinerary,
    pay_and_confirm,
    places,
    stripe_api,
    success_url,
    traveller,
    world,
)

S = BookingStatus


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


def costing(itinerary: Itinerary, amount: int) -> Itinerary:  # noqa: F811 - the fixture's name
    return itinerary.model_copy(update={"price": eur(amount), "id": f"{itinerary.id}-{amount}"})


def refund_requests(world: World) -> list[int]:  # noqa: F811
    """Statuses Stripe answered to refund requests that reached it."""
    return [
        r.status for r in world.stripe.requests if (r.method, r.path) == ("POST", "/v1/refunds")
    ]


# bounded by what remains ---------------------------------------------------------------------
async def test_admin_refunds_never_add_up_to_more_than_was_paid(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, costing(itinerary, 4100))

    part = await world.service.refund_by_admin(
        booking.reference, amount=eur(1000), reason=None, admin_id=7
    )
    assert part.status is S.CONFIRMED
    with pytest.raises(NothingToRefundError) as refused:
        await world.service.refund_by_admin(
            booking.reference, amount=eur(4000), reason=None, admin_id=7
        )
    assert str(refused.value) == (
        f"€40.00 is more than is left to refund on booking {booking.reference}: "
        "€31.00 of €41.00 (€10.00 already refunded)."
    )
    rest = await world.service.refund_by_admin(
        booking.reference, amount=None, reason=None, admin_id=7
    )

    assert rest.status is S.REFUNDED
    assert sorted(r["amount"] for r in world.stripe.refunds.values()) == [1000, 3100]
    assert refund_requests(world) == [200, 200]  # the refusal never reached Stripe
    assert (rest.refunded_minor, rest.refund_pending_minor) == (4100, 0)
    told = world.notifier.containing("refund")
    assert [m.text.count("€31.00") for m in told][-1] == 1


async def test_refunding_exactly_what_is_left_ends_the_booking(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, costing(itinerary, 4100))
    await world.service.refund_by_admin(
        booking.reference, amount=eur(1000), reason=None, admin_id=7
    )

    rest = await world.service.refund_by_admin(
        booking.reference, amount=eur(3100), reason=None, admin_id=7
    )

    assert rest.status is S.REFUNDED
    with pytest.raises(NothingToRefundError, match="already been refunded"):
        await world.service.refund_by_admin(
            booking.reference, amount=eur(100), reason=None, admin_id=7
        )


@pytest.fixture
async def sandbox_service(tmp_path: Path) -> AsyncIterator[tuple[BookingService, SandboxGateway]]:
    storage = SQLiteStorage(tmp_path / "refunds.sqlite3")
    await storage.start()
    gateway = SandboxGateway(storage, f"http://127.0.0.1:{unused_port()}")
    service = BookingService(
        storage,
        DemoProvider(places=PlaceIndex.default()),
        gateway,
        RecordingNotifier(),
        success_url=success_url,
        cancel_url=cancel_url,
    )
    try:
        yield service, gateway
    finally:
        await storage.close()


async def test_sandbox_refunds_are_bounded_by_the_payment(
    sandbox_service: tuple[BookingService, SandboxGateway],
    itinerary: Itinerary,  # noqa: F811
) -> None:
    """The €10, €40, "the rest" of a €41 booking that refunded €91 on the sandbox gateway."""
    service, gateway = sandbox_service
    booking, session = await service.start_checkout(USER, costing(itinerary, 4100), (traveller(),))
    await service.handle_event(await gateway.pay(session.id))

    await service.refund_by_admin(booking.reference, amount=eur(1000), reason=None, admin_id=7)
    with pytest.raises(NothingToRefundError, match="more than is left"):
        await service.refund_by_admin(booking.reference, amount=eur(4000), reason=None, admin_id=7)
    rest = await service.refund_by_admin(booking.reference, amount=None, reason=None, admin_id=7)

    assert rest.status is S.REFUNDED
    assert rest.refunded_minor == 4100
    assert rest.payment_intent_id is not None
    with pytest.raises(PaymentError, match=r"greater than unrefunded|already been refunded"):
        await gateway.refund(
            rest.payment_intent_id, amount=eur(100), reason=None, idempotency_key="again"
        )


# one refund when the traveller and an admin act at once -----------------------------------------
async def _second_worker(world: World, storage_factory: StorageFactory) -> BookingService:  # noqa: F811
    return BookingService(
        await storage_factory.open(),
        DemoProvider(places=PlaceIndex.default()),
        world.gateway,
        world.notifier,
        success_url=success_url,
        cancel_url=cancel_url,
    )


async def _while_a_refund_is_at_stripe(world: World) -> None:  # noqa: F811
    for _ in range(500):
        if world.stripe.in_flight:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no refund reached Stripe")


async def test_admin_refund_while_the_traveller_cancels_reaches_stripe_once(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
    storage_factory: StorageFactory,
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    admin_worker = await _second_worker(world, storage_factory)
    world.stripe.delays["/v1/refunds"] = 0.5

    cancelling = asyncio.create_task(world.service.cancel_by_user(USER, booking.reference))
    await _while_a_refund_is_at_stripe(world)
    with pytest.raises(NothingToRefundError) as told:
        await admin_worker.refund_by_admin(booking.reference, amount=None, reason=None, admin_id=7)
    cancelled = await cancelling

    assert "already" in str(told.value)
    assert "refund" in str(told.value)
    assert cancelled.booking.status is S.REFUNDED
    assert refund_requests(world) == [200]
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == booking.amount.amount


async def test_two_coroutines_of_one_worker_refund_once(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    world.stripe.delays["/v1/refunds"] = 0.2

    outcomes = await asyncio.gather(
        world.service.cancel_by_user(USER, booking.reference),
        world.service.refund_by_admin(booking.reference, amount=None, reason=None, admin_id=7),
        return_exceptions=True,
    )

    [refused] = [o for o in outcomes if isinstance(o, BaseException)]
    assert isinstance(refused, BookingError)
    assert "already" in str(refused)
    assert refund_requests(world) == [200]
    assert (await world.booking(booking.reference)).status is S.REFUNDED


async def test_traveller_cancelling_while_an_admin_refunds_is_told_so(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
    storage_factory: StorageFactory,
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    traveller_worker = await _second_worker(world, storage_factory)
    world.stripe.delays["/v1/refunds"] = 0.5

    refunding = asyncio.create_task(
        world.service.refund_by_admin(booking.reference, amount=None, reason=None, admin_id=7)
    )
    await _while_a_refund_is_at_stripe(world)
    with pytest.raises(BookingError) as told:
        await traveller_worker.cancel_by_user(USER, booking.reference)
    refunded = await refunding

    assert "already" in str(told.value)
    assert refunded.status is S.REFUNDED
    assert refund_requests(world) == [200]


async def test_partial_admin_refund_while_the_traveller_cancels_refunds_the_rest(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
    storage_factory: StorageFactory,
) -> None:
    booking = await pay_and_confirm(world, costing(itinerary, 4100))
    traveller_worker = await _second_worker(world, storage_factory)
    world.stripe.delays["/v1/refunds"] = 0.5

    refunding = asyncio.create_task(
        world.service.refund_by_admin(booking.reference, amount=eur(1000), reason=None, admin_id=7)
    )
    await _while_a_refund_is_at_stripe(world)
    cancelled = await traveller_worker.cancel_by_user(USER, booking.reference)
    await refunding

    assert cancelled.booking.status is S.REFUNDED
    assert sorted(r["amount"] for r in world.stripe.refunds.values()) == [1000, 3100]
    assert refund_requests(world) == [200, 200]


# a failed attempt is not pinned to its key ------------------------------------------------------
async def test_an_admin_refund_can_be_retried_after_stripe_failed_it(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    world.stripe.fail_next("/v1/refunds")

    with pytest.raises(RefundFailedError, match="run the refund again"):
        await world.service.refund_by_admin(booking.reference, amount=None, reason=None, admin_id=7)
    after_failure = await world.booking(booking.reference)
    assert (after_failure.refunded_minor, after_failure.refund_pending_minor) == (0, 0)

    refunded = await world.service.refund_by_admin(
        booking.reference, amount=None, reason=None, admin_id=7
    )

    assert refunded.status is S.REFUNDED
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == booking.amount.amount
    keys = [r.idempotency_key for r in world.stripe.requests if r.method == "POST"][-2:]
    assert len(set(keys)) == 2  # a new attempt, a new key


async def test_a_partial_refund_can_be_retried_after_stripe_failed_it(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    world.stripe.fail_next("/v1/refunds")
    part = eur(2550)

    with pytest.raises(RefundFailedError):
        await world.service.refund_by_admin(booking.reference, amount=part, reason=None, admin_id=7)
    again = await world.service.refund_by_admin(
        booking.reference, amount=part, reason=None, admin_id=7
    )

    assert again.status is S.CONFIRMED
    assert [r["amount"] for r in world.stripe.refunds.values()] == [2550]
    assert again.refunded_minor == 2550


async def test_a_cancellation_whose_refund_failed_is_refunded_by_the_next_try(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    world.stripe.fail_next("/v1/refunds")

    with pytest.raises(RefundFailedError):
        await world.service.cancel_by_user(USER, booking.reference)
    assert (await world.booking(booking.reference)).status is S.CANCELLED
    assert any("refund" in alert.lower() for alert in world.alerts)

    refunded = await world.service.refund_by_admin(
        booking.reference, amount=None, reason=None, admin_id=7
    )
    assert refunded.status is S.REFUNDED
    assert len(world.stripe.refunds) == 1


# a refund whose answer was lost ------------------------------------------------------------------
async def test_a_partial_refund_whose_answer_was_lost_is_not_sent_twice(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    part = eur(2550)
    # Stripe makes the refund, then every answer (the client's own retries too) is lost.
    world.stripe.lose_answers("POST /v1/refunds", times=3)

    done = await world.service.refund_by_admin(
        booking.reference, amount=part, reason=None, admin_id=7
    )

    assert done.status is S.CONFIRMED
    assert (done.refunded_minor, done.refund_pending_minor) == (2550, 0)
    assert [r["amount"] for r in world.stripe.refunds.values()] == [2550]
    assert any("25.50" in message.text for _, message in world.notifier.sent)


async def test_a_refund_nobody_can_confirm_keeps_its_amount_held(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    part = eur(2550)
    # The refund is made, but its answers and the lookups after them are all lost.
    world.stripe.lose_answers("POST /v1/refunds", times=3)
    world.stripe.lose_answers("GET /v1/refunds", times=10)

    with pytest.raises(RefundFailedError, match="unconfirmed"):
        await world.service.refund_by_admin(booking.reference, amount=part, reason=None, admin_id=7)
    held = await world.booking(booking.reference)
    assert (held.refunded_minor, held.refund_pending_minor) == (0, 2550)
    [alert] = [a for a in world.alerts if "did not answer" in a]
    assert booking.reference in alert
    assert "idempotency_key" in alert

    # Refunding "the rest" now sends only what is not held: the charge is never exceeded.
    rest = await world.service.refund_by_admin(
        booking.reference, amount=None, reason=None, admin_id=7
    )
    assert sorted(r["amount"] for r in world.stripe.refunds.values()) == sorted(
        [2550, booking.amount.amount - 2550]
    )
    assert rest.refunded_minor == booking.amount.amount - 2550


# a refund claim whose worker stopped -------------------------------------------------------------
async def cancelled_mid_refund(world: World, itinerary: Itinerary, *, made: bool) -> Booking:  # noqa: F811
    """A traveller's cancellation whose worker stopped after claiming the refund: before
    sending it (``made`` False), or after Stripe made it but before recording that."""
    booking = await pay_and_confirm(world, itinerary)
    assert await world.storage.transition(booking.id, S.CONFIRMED, S.CANCELLED)
    attempt = await world.storage.reserve_refund(booking.id, booking.amount.amount)
    assert attempt is not None
    if made:
        assert booking.payment_intent_id is not None
        await world.gateway.refund(
            booking.payment_intent_id,
            amount=booking.amount,
            reason="requested_by_customer",
            idempotency_key=f"refund:{booking.id}:user:{attempt}",
        )
    return await world.booking(booking.reference)


def later(world: World) -> BookingService:  # noqa: F811
    """The sweep of a worker whose clock is past the point where a claim counts as stale."""

    def clock() -> datetime:
        return utcnow() + REFUND_CLAIM_STALE + timedelta(minutes=1)

    return world.make_service(clock=clock)


async def test_a_refund_made_by_a_worker_that_stopped_is_counted_and_told_once(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await cancelled_mid_refund(world, itinerary, made=True)
    assert booking.refund_pending_minor == booking.amount.amount

    assert await world.service.resolve_refund_claims() == 0  # not stale yet: maybe still going
    sweepers = [later(world), later(world)]
    ended = await asyncio.gather(*(sweeper.resolve_refund_claims() for sweeper in sweepers))

    assert sorted(ended) == [0, 1]
    done = await world.booking(booking.reference)
    assert done.status is S.REFUNDED
    assert (done.refunded_minor, done.refund_pending_minor) == (booking.amount.amount, 0)
    told = [m.text for m in world.notifier.to(USER) if "refunded" in m.text.lower()]
    assert len(told) == 1
    assert len(world.stripe.refunds) == 1
    assert world.alerts == []


async def test_a_refund_a_stopped_worker_never_made_becomes_refundable_again(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await cancelled_mid_refund(world, itinerary, made=False)
    with pytest.raises(NothingToRefundError):  # the claim blocks every other refund meanwhile
        await world.service.refund_by_admin(booking.reference, amount=None, reason=None, admin_id=7)

    assert await later(world).resolve_refund_claims() == 1

    released = await world.booking(booking.reference)
    assert (released.refunded_minor, released.refund_pending_minor) == (0, 0)
    [alert] = world.alerts
    assert booking.reference in alert
    assert "never made" in alert
    refunded = await world.service.refund_by_admin(
        booking.reference, amount=None, reason=None, admin_id=7
    )
    assert refunded.status is S.REFUNDED
    assert [r["amount"] for r in world.stripe.refunds.values()] == [booking.amount.amount]


# a payment for a booking the traveller already cancelled ---------------------------------------
async def test_a_late_payment_stripe_could_not_refund_is_refunded_on_redelivery(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    paid = world.stripe.complete_session(session.id)
    assert await world.service.abandon(USER, booking.reference)
    world.stripe.fail_next("/v1/refunds")  # Stripe's API has a bad moment

    # The first delivery fails loudly, so that Stripe delivers the event again.
    assert await world.stripe.deliver(world.webhook, paid) == [500]
    assert (await world.booking(booking.reference)).refund_pending_minor == 0
    assert await world.stripe.deliver(world.webhook, paid) == [200]

    ended = await world.booking(booking.reference)
    assert ended.status is S.REFUNDED
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == booking.amount.amount
    [told] = world.notifier.containing("after it was cancelled")
    assert booking.amount.format() in told.text


async def test_a_payment_arriving_after_the_traveller_cancelled_is_refunded_not_ticketed(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    paid = world.stripe.complete_session(session.id)  # paid at Stripe a moment before...
    assert await world.service.abandon(USER, booking.reference)  # ...the traveller cancels

    assert await world.stripe.deliver(world.webhook, paid, times=3) == [200] * 3

    ended = await world.booking(booking.reference)
    assert ended.status is S.REFUNDED
    assert ended.payment_intent_id == paid["data"]["object"]["payment_intent"]
    [refund] = world.stripe.refunds.values()
    assert refund["amount"] == booking.amount.amount
    assert not world.notifier.containing("Booking confirmed")
    [told] = world.notifier.containing("after it was cancelled")
    assert booking.amount.format() in told.text
