"""Storage contract for refunds, payment-link renewals and erasure held for an upcoming trip:
every test runs on SQLite and on supabase-py → PostgREST → PostgreSQL (fixture ``storage``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.models import BookingStatus, PassengerCategory, utcnow
from services.storage.base import Storage
from tests.support.supabase_stack import StorageFactory
from tests.test_storage_contract import new_booking

S = BookingStatus


async def test_refund_claims_never_add_up_to_more_than_was_paid(storage: Storage) -> None:
    booking = await storage.create_booking(new_booking(amount=4100, status=S.CONFIRMED))

    assert await storage.reserve_refund(booking.id, 1000) == 1
    await storage.settle_refund(booking.id, 1000, sent=True)
    assert await storage.reserve_refund(booking.id, 4000) is None  # 10 + 40 > 41
    assert await storage.reserve_refund(booking.id, 0) is None
    assert await storage.reserve_refund(booking.id, -5) is None
    assert await storage.reserve_refund(booking.id, 3100) == 2  # the rest
    pending = await storage.get_booking(booking.id)
    assert pending is not None
    assert (pending.refunded_minor, pending.refund_pending_minor) == (1000, 3100)
    assert pending.refundable.amount == 0
    assert await storage.reserve_refund(booking.id, 1) is None

    await storage.settle_refund(booking.id, 3100, sent=True)
    done = await storage.get_booking(booking.id)
    assert done is not None
    assert (done.refunded_minor, done.refund_pending_minor) == (4100, 0)
    assert done.refunded.amount == 4100


async def test_a_released_refund_claim_can_be_claimed_again_under_a_new_attempt(
    storage: Storage,
) -> None:
    booking = await storage.create_booking(new_booking(amount=4100, status=S.CONFIRMED))
    assert await storage.reserve_refund(booking.id, 4100) == 1
    await storage.settle_refund(booking.id, 4100, sent=False)
    released = await storage.get_booking(booking.id)
    assert released is not None
    assert (released.refunded_minor, released.refund_pending_minor) == (0, 0)
    assert await storage.reserve_refund(booking.id, 4100) == 2


async def test_concurrent_refund_claims_on_two_workers_have_one_winner(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    other_worker = await storage_factory.open()
    booking = await storage.create_booking(new_booking(amount=4100, status=S.CONFIRMED))

    claims = await asyncio.gather(
        *((storage if n % 2 else other_worker).reserve_refund(booking.id, 4100) for n in range(10))
    )

    assert [claim for claim in claims if claim is not None] == [1]


async def test_payment_link_renewals_stop_at_the_limit(storage: Storage) -> None:
    booking = await storage.create_booking(new_booking(status=S.AWAITING_PAYMENT))
    assert [await storage.claim_checkout_renewal(booking.id, 3) for _ in range(5)] == [
        1,
        2,
        3,
        None,
        None,
    ]
    stored = await storage.get_booking(booking.id)
    assert stored is not None
    assert stored.checkout_renewals == 3


async def test_erasure_waits_for_a_held_trip_to_be_over(storage: Storage) -> None:
    upcoming = await storage.create_booking(new_booking(user_id=1, status=S.CONFIRMED))
    past = await storage.create_booking(new_booking(user_id=1, status=S.AWAITING_PAYMENT))
    cancelled_later = await storage.create_booking(new_booking(user_id=1, status=S.CONFIRMED))
    now = utcnow()
    await storage.hold_booking_data(upcoming.id, now + timedelta(days=3))
    await storage.hold_booking_data(cancelled_later.id, now + timedelta(days=3))

    assert await storage.delete_user_data(1) == 1

    kept = await storage.get_booking(upcoming.id)
    assert kept is not None
    assert kept.travellers == upcoming.travellers  # the airline still needs them
    assert kept.erase_after is not None
    erased = await storage.get_booking(past.id)
    assert erased is not None
    assert erased.travellers[0].first_name == "Erased"

    assert await storage.erase_held_bookings(now) == 0
    await storage.transition(cancelled_later.id, S.CONFIRMED, S.CANCELLED)
    assert await storage.erase_held_bookings(now) == 1  # no trip left to fly
    assert await storage.erase_held_bookings(now + timedelta(days=3, seconds=1)) == 1
    assert await storage.erase_held_bookings(now + timedelta(days=4)) == 0
    for booking in (upcoming, cancelled_later):
        stored = await storage.get_booking(booking.id)
        assert stored is not None
        assert stored.erase_after is None
        (traveller,) = stored.travellers
        assert traveller.first_name == "Erased"
        assert traveller.passport_number == ""
        assert traveller.category is PassengerCategory.ADULT
