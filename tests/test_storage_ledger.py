"""The storage port's payment ledger and fulfilment lease, on both adapters.

What reconciliation relies on: an event stays unapplied until marked, every session a booking
had is kept, one owner at a time holds a booking's ticketing lease (a lapsed one can be taken),
the journal keeps what was written, and the reconciliation queries find what they should.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.models import BookingStatus, utcnow
from services.storage.base import Storage
from services.storage.rows import new_booking_id
from tests.support.supabase_stack import StorageFactory
from tests.test_storage_contract import new_booking

S = BookingStatus


async def test_an_event_stays_unapplied_until_marked(storage: Storage) -> None:
    booking = await storage.create_booking(new_booking())

    assert await storage.receive_payment_event("evt_a", "checkout.session.completed", booking.id)
    assert await storage.receive_payment_event("evt_a", "checkout.session.completed", booking.id)
    await storage.mark_payment_event_applied("evt_a")
    assert not await storage.receive_payment_event("evt_a", "checkout.session.completed")
    # A plain record (our refunds, notices) is applied when written.
    assert await storage.record_payment_event("re_1", "refund.created", booking.id)
    assert not await storage.receive_payment_event("re_1", "refund.created", booking.id)
    assert [e[0] for e in await storage.list_payment_events(booking.id)] == ["evt_a", "re_1"]


async def test_every_session_a_booking_had_is_kept(storage: Storage) -> None:
    booking = await storage.create_booking(new_booking())
    other = await storage.create_booking(new_booking())
    deadline = utcnow() + timedelta(minutes=30)
    await storage.attach_checkout(booking.id, checkout_session_id="cs_1", payment_deadline=deadline)
    await storage.attach_checkout(booking.id, checkout_session_id="cs_2", payment_deadline=deadline)
    await storage.attach_checkout(other.id, checkout_session_id="cs_3", payment_deadline=deadline)

    assert await storage.list_checkout_sessions(booking.id) == ["cs_1", "cs_2"]
    assert (await storage.get_booking(booking.id)).checkout_session_id == "cs_2"  # type: ignore[union-attr]
    assert await storage.list_checkout_sessions(new_booking_id()) == []


async def test_one_owner_holds_a_ticketing_lease_until_it_lapses(
    storage_factory: StorageFactory,
) -> None:
    first, second = await storage_factory.open(), await storage_factory.open()
    booking = await first.create_booking(new_booking())
    now = utcnow()
    lease = timedelta(minutes=3)

    claims = await asyncio.gather(
        *(
            store.claim_fulfilment(booking.id, owner, now=now, until=now + lease)
            for store, owner in ((first, "a"), (second, "b")) * 5
        )
    )
    winners = {owner for owner, claim in zip("ab" * 5, claims, strict=True) if claim}
    assert len(winners) == 1
    [holder] = winners
    other = "b" if holder == "a" else "a"
    assert await first.claim_fulfilment(booking.id, holder, now=now, until=now + lease)  # renew
    assert await first.claim_fulfilment(booking.id, other, now=now, until=now + lease) is None
    later = now + lease + timedelta(seconds=1)
    assert await second.claim_fulfilment(booking.id, other, now=later, until=later + lease)

    await second.release_fulfilment(booking.id, holder)  # not the holder's any more: no effect
    assert await first.claim_fulfilment(booking.id, holder, now=later, until=later) is None
    await second.release_fulfilment(booking.id, other)
    assert await first.claim_fulfilment(booking.id, holder, now=later, until=later) is not None


async def test_the_ticketing_journal_keeps_what_was_written(storage: Storage) -> None:
    booking = await storage.create_booking(new_booking())
    now = utcnow()
    claim = await storage.claim_fulfilment(booking.id, "a", now=now, until=now)
    assert claim is not None
    assert (claim.provider_order, claim.provider_booking_id) == (None, None)

    await storage.note_fulfilment(booking.id, provider_order="4000001:tx")
    await storage.note_fulfilment(booking.id, provider_booking_id="4000001")
    claim = await storage.claim_fulfilment(booking.id, "a", now=now, until=now)

    assert claim is not None
    assert claim.provider_order == "4000001:tx"
    assert claim.provider_booking_id == "4000001"


async def test_reconciliation_finds_stuck_paid_and_recently_expired_bookings(
    storage: Storage,
) -> None:
    paid = await storage.create_booking(new_booking(status=S.AWAITING_PAYMENT))
    expired = await storage.create_booking(new_booking(status=S.AWAITING_PAYMENT))
    waiting = await storage.create_booking(new_booking(status=S.AWAITING_PAYMENT))
    now = utcnow()
    for booking, session in ((paid, "cs_p"), (expired, "cs_e"), (waiting, "cs_w")):
        await storage.attach_checkout(
            booking.id, checkout_session_id=session, payment_deadline=now - timedelta(minutes=5)
        )
    assert await storage.transition(paid.id, S.AWAITING_PAYMENT, S.PAID)
    assert await storage.transition(expired.id, S.AWAITING_PAYMENT, S.EXPIRED)

    soon = utcnow() + timedelta(seconds=1)
    assert [b.id for b in await storage.list_stuck_paid(soon)] == [paid.id]
    assert await storage.list_stuck_paid(now - timedelta(minutes=1)) == []
    found = await storage.list_expired_between(now - timedelta(hours=1), now)
    assert [b.id for b in found] == [expired.id]
    assert (
        await storage.list_expired_between(now - timedelta(hours=2), now - timedelta(hours=1)) == []
    )
