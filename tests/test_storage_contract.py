"""The storage contract: every test runs against SQLite and against supabase-py → PostgREST →
PostgreSQL (fixture ``storage``), so the bot behaves the same on either adapter."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from contextlib import closing
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest

from services.admin import AdminService, Period
from services.alert_models import AlertStatus, AlertUpdate, NewPriceAlert
from services.models import (
    AuditEntry,
    BookingStatus,
    BroadcastStatus,
    DeliveryStatus,
    Gender,
    IllegalTransitionError,
    Itinerary,
    Location,
    LocationKind,
    NewBooking,
    PassengerCategory,
    SearchLogEntry,
    SearchQuery,
    Segment,
    Traveller,
    utcnow,
)
from services.money import Money
from services.storage.base import (
    REFERENCE_ALPHABET,
    REMINDER_KINDS,
    BookingNotFoundError,
    Storage,
    StorageUnavailableError,
)
from services.storage.migrate import MIGRATIONS_DIR
from services.storage.sqlite import SCHEMA_STEPS
from tests.support.supabase_stack import StorageFactory

LISBON = ZoneInfo("Europe/Lisbon")
MADRID = ZoneInfo("Europe/Madrid")
REFERENCE_SHAPE = re.compile(f"^[{REFERENCE_ALPHABET}]{{6}}$")
S = BookingStatus


def itinerary(price: Money, *, round_trip: bool = False) -> Itinerary:
    segments = [
        Segment(
            carrier="TP",
            flight_number="TP1038",
            origin="LIS",
            destination="BCN",
            departure=datetime(2027, 3, 12, 6, 30, tzinfo=LISBON),
            arrival=datetime(2027, 3, 12, 9, 45, tzinfo=MADRID),
        )
    ]
    if round_trip:
        segments.append(
            Segment(
                carrier="TP",
                flight_number="TP1039",
                origin="BCN",
                destination="LIS",
                departure=datetime(2027, 3, 19, 10, 30, tzinfo=MADRID),
                arrival=datetime(2027, 3, 19, 11, 50, tzinfo=LISBON),
                inbound=True,
            )
        )
    return Itinerary(id="demo-LIS-BCN-1", provider="demo", segments=tuple(segments), price=price)


def traveller(first_name: str = "Ana", passport: str = "P1234567") -> Traveller:
    return Traveller(
        category=PassengerCategory.ADULT,
        first_name=first_name,
        last_name="Silva",
        birth_date=date(1990, 5, 17),
        gender=Gender.FEMALE,
        nationality="PT",
        passport_number=passport,
        passport_expiry=date(2031, 1, 1),
        email="ana@example.com",
        phone="+351912345678",
    )


def new_booking(
    user_id: int = 1001,
    *,
    amount: int = 1999,
    currency: str = "EUR",
    status: BookingStatus = S.DRAFT,
    round_trip: bool = False,
) -> NewBooking:
    price = Money(amount=amount, currency=currency)
    return NewBooking(
        user_id=user_id,
        itinerary=itinerary(price, round_trip=round_trip),
        travellers=(traveller(),),
        amount=price,
        status=status,
    )


# profiles ----------------------------------------------------------------------------------------
async def test_profile_is_created_then_refreshed_keeping_flags_travellers_and_language(
    storage: Storage,
) -> None:
    created = await storage.upsert_profile(7, username="ana_s", first_name="Ana", language="pt")
    assert (created.user_id, created.username, created.language) == (7, "ana_s", "pt")
    assert created.created_at is not None
    assert await storage.set_blocked(7, True)
    await storage.save_travellers(7, (traveller(),))

    refreshed = await storage.upsert_profile(7, username=None, first_name="Ana Maria")

    assert refreshed.username is None  # removed on Telegram
    assert refreshed.first_name == "Ana Maria"
    assert refreshed.language == "pt"  # a preference: kept when not given
    assert refreshed.blocked
    assert refreshed.saved_travellers == (traveller(),)
    assert refreshed.saved_travellers[0].passport_number == "P1234567"
    assert await storage.get_profile(7) == refreshed
    assert await storage.get_profile(8) is None


async def test_username_lookup_ignores_case_and_at_sign_but_not_wildcards(
    storage: Storage,
) -> None:
    await storage.upsert_profile(1, username="Ana_Silva")
    await storage.upsert_profile(2, username="AnaXSilva")

    found = await storage.find_profile_by_username("@ana_silva")
    assert found is not None
    assert found.user_id == 1
    assert await storage.find_profile_by_username("ana%") is None
    assert await storage.find_profile_by_username("nobody") is None
    assert await storage.find_profile_by_username("") is None


async def test_blocked_users_and_users_who_blocked_the_bot_get_no_broadcast(
    storage: Storage,
) -> None:
    for user_id in (30, 10, 20, 40):
        await storage.upsert_profile(user_id)
    assert await storage.set_blocked(20, True)
    await storage.set_bot_blocked(40, True)
    await storage.set_bot_blocked(50, True)  # never seen before: remembered anyway

    assert await storage.list_recipient_ids() == [10, 30]
    assert not await storage.set_blocked(99, True)  # no such profile
    assert await storage.set_blocked(20, False)
    await storage.set_bot_blocked(40, False)
    assert await storage.list_recipient_ids() == [10, 20, 30, 40]


# bookings ----------------------------------------------------------------------------------------
async def test_booking_reads_back_exactly_as_stored(storage: Storage) -> None:
    wanted = new_booking(amount=1999, round_trip=True)

    created = await storage.create_booking(wanted)
    loaded = await storage.get_booking(created.id)

    assert loaded == created
    assert loaded.amount == Money(amount=1999, currency="EUR")
    assert loaded.itinerary == wanted.itinerary
    assert loaded.itinerary.price.amount == 1999
    assert loaded.travellers == wanted.travellers
    assert loaded.travellers[0].passport_number == "P1234567"
    assert (loaded.origin, loaded.destination) == ("LIS", "BCN")
    assert loaded.return_date == date(2027, 3, 19)
    assert loaded.status is S.DRAFT
    assert loaded.created_at.tzinfo is not None
    assert loaded.checkout_session_id is None


async def test_zero_decimal_currency_keeps_whole_yen(storage: Storage) -> None:
    created = await storage.create_booking(new_booking(amount=12000, currency="JPY"))

    loaded = await storage.get_booking(created.id)

    assert loaded is not None
    assert loaded.amount == Money(amount=12000, currency="JPY")
    assert loaded.amount.format() == "¥12,000"


async def test_negative_amount_is_refused(storage: Storage) -> None:
    with pytest.raises(ValueError, match="negative"):
        await storage.create_booking(new_booking(amount=-1))


async def test_references_are_short_unambiguous_and_unique(storage: Storage) -> None:
    created = await asyncio.gather(*(storage.create_booking(new_booking()) for _ in range(30)))

    references = [booking.reference for booking in created]
    assert all(REFERENCE_SHAPE.match(reference) for reference in references)
    assert not set("01IOL") & set("".join(references))
    assert len(set(references)) == 30


async def test_a_colliding_reference_is_redrawn(storage_factory: StorageFactory) -> None:
    draws = iter(["KXT4PA", "KXT4PA", "KXT4PA", "M7QW2C"])
    store = await storage_factory.open(references=lambda: next(draws))

    first = await store.create_booking(new_booking())
    second = await store.create_booking(new_booking())

    assert (first.reference, second.reference) == ("KXT4PA", "M7QW2C")
    stuck = await storage_factory.open(references=lambda: "KXT4PA")
    with pytest.raises(StorageUnavailableError, match="no free booking reference"):
        await stuck.create_booking(new_booking())


async def test_a_reference_is_found_only_by_its_owner_or_an_admin(storage: Storage) -> None:
    mine = await storage.create_booking(new_booking(user_id=1))

    found = await storage.get_booking_by_reference(mine.reference.lower(), user_id=1)
    assert found is not None
    assert found.id == mine.id
    assert await storage.get_booking_by_reference(mine.reference, user_id=2) is None
    by_admin = await storage.get_booking_by_reference(f" #{mine.reference} ", user_id=None)
    assert by_admin is not None
    assert by_admin.id == mine.id
    assert await storage.get_booking_by_reference("ZZZZZZ", user_id=1) is None
    assert await storage.get_booking_by_reference("'; drop table bookings; --", user_id=1) is None


async def test_unknown_or_malformed_booking_ids_are_not_found(storage: Storage) -> None:
    assert await storage.get_booking("00000000-0000-4000-8000-000000000000") is None
    assert await storage.get_booking("not-a-booking") is None
    assert await storage.get_booking_by_session("cs_test_unknown") is None
    with pytest.raises(BookingNotFoundError):
        await storage.transition("not-a-booking", S.DRAFT, S.AWAITING_PAYMENT)
    with pytest.raises(BookingNotFoundError):
        await storage.transition(
            "00000000-0000-4000-8000-000000000000", S.DRAFT, S.AWAITING_PAYMENT
        )


async def test_a_users_bookings_are_listed_newest_first(storage: Storage) -> None:
    first = await storage.create_booking(new_booking(user_id=5))
    await storage.create_booking(new_booking(user_id=6))
    second = await storage.create_booking(new_booking(user_id=5))
    third = await storage.create_booking(new_booking(user_id=5))

    listed = await storage.list_bookings(5)

    assert [b.id for b in listed] == [third.id, second.id, first.id]
    assert [b.id for b in await storage.list_bookings(5, limit=2)] == [third.id, second.id]
    assert await storage.list_bookings(7) == []


async def test_checkout_session_is_attached_replaced_and_found(storage: Storage) -> None:
    booking = await storage.create_booking(new_booking())
    other = await storage.create_booking(new_booking())
    deadline = utcnow() + timedelta(minutes=30)

    attached = await storage.attach_checkout(
        booking.id, checkout_session_id="cs_test_1", payment_deadline=deadline
    )
    assert attached.checkout_session_id == "cs_test_1"
    assert attached.payment_deadline is not None
    assert abs(attached.payment_deadline - deadline) < timedelta(milliseconds=1)

    await storage.attach_checkout(
        booking.id, checkout_session_id="cs_test_2", payment_deadline=deadline
    )
    found = await storage.get_booking_by_session("cs_test_2")
    assert found is not None
    assert found.id == booking.id
    assert await storage.get_booking_by_session("cs_test_1") is None

    with pytest.raises(ValueError, match="another booking"):
        await storage.attach_checkout(
            other.id, checkout_session_id="cs_test_2", payment_deadline=deadline
        )
    with pytest.raises(BookingNotFoundError):
        await storage.attach_checkout(
            "00000000-0000-4000-8000-000000000000",
            checkout_session_id="cs_test_3",
            payment_deadline=deadline,
        )


async def test_the_provider_order_and_airline_tickets_are_recorded_and_found(
    storage: Storage,
) -> None:
    booking = await storage.create_booking(new_booking())
    other = await storage.create_booking(new_booking())
    assert booking.provider_order_id is None
    assert booking.ticket_numbers == ()

    held = await storage.attach_provider_order(
        booking.id, order_id="ord_0000A1", token="tx-secret", airline_reference="RZPYWW"
    )
    assert (held.provider_order_id, held.airline_reference) == ("ord_0000A1", "RZPYWW")
    assert "tx-secret" not in repr(held)
    ticketed = await storage.attach_provider_order(
        booking.id, airline_reference="RZPYWX", ticket_numbers=["1252135623001"]
    )
    assert ticketed.provider_order_id == "ord_0000A1"  # what is not given stays
    assert ticketed.provider_order_token == "tx-secret"
    assert ticketed.ticket_numbers == ("1252135623001",)
    found = await storage.get_booking_by_provider_order("ord_0000A1")
    assert found is not None
    assert found.id == booking.id
    assert found.airline_reference == "RZPYWX"
    assert found.ticket_numbers == ("1252135623001",)
    assert await storage.get_booking_by_provider_order("ord_unknown") is None

    with pytest.raises(ValueError, match="another booking"):
        await storage.attach_provider_order(other.id, order_id="ord_0000A1")
    with pytest.raises(BookingNotFoundError):
        await storage.attach_provider_order(
            "00000000-0000-4000-8000-000000000000", order_id="ord_x"
        )


async def test_status_moves_only_along_allowed_paths(storage: Storage) -> None:
    booking = await storage.create_booking(new_booking())

    assert await storage.transition(booking.id, S.DRAFT, S.AWAITING_PAYMENT)
    assert not await storage.transition(booking.id, S.DRAFT, S.AWAITING_PAYMENT)  # stale
    with pytest.raises(IllegalTransitionError):
        await storage.transition(booking.id, S.AWAITING_PAYMENT, S.CONFIRMED)
    assert await storage.transition(
        booking.id, S.AWAITING_PAYMENT, S.PAID, payment_intent_id="pi_1"
    )
    assert await storage.transition(booking.id, S.PAID, S.CONFIRMED)
    assert await storage.transition(booking.id, S.CONFIRMED, S.CANCELLED)
    assert await storage.transition(booking.id, S.CANCELLED, S.REFUNDED)

    stored = await storage.get_booking(booking.id)
    assert stored is not None
    assert stored.status is S.REFUNDED
    assert stored.payment_intent_id == "pi_1"  # kept by later moves that do not mention it
    assert stored.updated_at >= booking.updated_at


async def test_failed_ticketing_and_late_payment_paths(storage: Storage) -> None:
    failing = await storage.create_booking(new_booking(status=S.PAID))
    assert await storage.transition(failing.id, S.PAID, S.FAILED)
    assert await storage.transition(failing.id, S.FAILED, S.REFUNDED)

    late = await storage.create_booking(new_booking(status=S.AWAITING_PAYMENT))
    assert await storage.transition(late.id, S.AWAITING_PAYMENT, S.EXPIRED)
    assert await storage.transition(late.id, S.EXPIRED, S.PAID)  # money taken wins
    stored = await storage.get_booking(late.id)
    assert stored is not None
    assert stored.status is S.PAID


async def test_twenty_concurrent_payments_apply_exactly_once(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    other_worker = await storage_factory.open()
    booking = await storage.create_booking(new_booking(status=S.AWAITING_PAYMENT))

    results = await asyncio.gather(
        *(
            (storage if n % 2 else other_worker).transition(
                booking.id, S.AWAITING_PAYMENT, S.PAID, payment_intent_id=f"pi_{n}"
            )
            for n in range(20)
        )
    )

    assert results.count(True) == 1
    winner = results.index(True)
    stored = await storage.get_booking(booking.id)
    assert stored is not None
    assert stored.status is S.PAID
    assert stored.payment_intent_id == f"pi_{winner}"


async def test_bookings_by_status_newest_first_optionally_per_user(storage: Storage) -> None:
    a = await storage.create_booking(new_booking(user_id=1, status=S.AWAITING_PAYMENT))
    await storage.create_booking(new_booking(user_id=1, status=S.PAID))
    c = await storage.create_booking(new_booking(user_id=2, status=S.AWAITING_PAYMENT))

    waiting = await storage.list_bookings_by_status(S.AWAITING_PAYMENT)
    assert [b.id for b in waiting] == [c.id, a.id]
    mine = await storage.list_bookings_by_status(S.AWAITING_PAYMENT, user_id=1)
    assert [b.id for b in mine] == [a.id]
    assert await storage.list_bookings_by_status(S.REFUNDED) == []


async def test_overdue_lists_only_unpaid_bookings_past_their_deadline(storage: Storage) -> None:
    now = utcnow()

    async def awaiting(deadline: timedelta) -> str:
        booking = await storage.create_booking(new_booking(status=S.AWAITING_PAYMENT))
        await storage.attach_checkout(
            booking.id,
            checkout_session_id=f"cs_{booking.id}",
            payment_deadline=now + deadline,
        )
        return booking.id

    late = await awaiting(-timedelta(minutes=5))
    later = await awaiting(-timedelta(minutes=1))
    await awaiting(timedelta(minutes=20))  # still has time
    paid = await awaiting(-timedelta(minutes=9))
    assert await storage.transition(paid, S.AWAITING_PAYMENT, S.PAID)

    overdue = await storage.list_overdue(now)
    assert [b.id for b in overdue] == [late, later]  # earliest deadline first
    assert [b.id for b in await storage.list_overdue(now, limit=1)] == [late]


# payment events ----------------------------------------------------------------------------------
async def test_the_same_stripe_event_is_new_exactly_once_under_concurrency(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    other_worker = await storage_factory.open()
    booking = await storage.create_booking(new_booking())

    results = await asyncio.gather(
        *(
            (storage if n % 2 else other_worker).record_payment_event(
                "evt_1", "checkout.session.completed", booking.id
            )
            for n in range(20)
        )
    )

    assert results.count(True) == 1
    assert not await storage.record_payment_event("evt_1", "checkout.session.completed")


async def test_payment_events_are_listed_per_booking_oldest_first(storage: Storage) -> None:
    booking = await storage.create_booking(new_booking())
    other = await storage.create_booking(new_booking())
    assert await storage.record_payment_event("evt_a", "checkout.session.completed", booking.id)
    assert await storage.record_payment_event("evt_b", "charge.refunded", booking.id)
    assert await storage.record_payment_event("evt_c", "checkout.session.expired", other.id)
    assert await storage.record_payment_event("evt_d", "account.updated")

    events = await storage.list_payment_events(booking.id)

    assert [(event_id, kind) for event_id, kind, _ in events] == [
        ("evt_a", "checkout.session.completed"),
        ("evt_b", "charge.refunded"),
    ]
    assert all(received.tzinfo is not None for _, _, received in events)
    assert events[0][2] <= events[1][2]
    with pytest.raises(ValueError, match="not a booking id"):
        await storage.record_payment_event("evt_e", "x", "garbage")


# search log, audit, statistics -------------------------------------------------------------------
def search(
    origin: str = "LIS", destination: str = "BCN", user_id: int | None = 1
) -> SearchLogEntry:
    return SearchLogEntry(
        user_id=user_id,
        origin=origin,
        destination=destination,
        departure=date(2027, 3, 12),
        return_date=date(2027, 3, 19),
        passengers=2,
        results=14,
        cached=False,
    )


async def test_last_route_is_the_users_newest_search(storage: Storage) -> None:
    assert await storage.last_route(1) is None
    await storage.log_search(search("LIS", "BCN", user_id=1))
    await storage.log_search(search("OPO", "TYO", user_id=1))
    await storage.log_search(search("AMS", "BER", user_id=2))
    await storage.log_search(search("MAD", "ROM", user_id=None))
    assert await storage.last_route(1) == ("OPO", "TYO")
    assert await storage.last_route(2) == ("AMS", "BER")


async def test_funnel_follows_searches_to_paid_bookings(storage: Storage) -> None:
    since = utcnow() - timedelta(hours=1)
    first, second, third = [await storage.log_search(search()) for _ in range(3)]
    assert len({first, second, third}) == 3
    await storage.mark_search_stage(first, "chosen")
    await storage.mark_search_stage(first, "chosen")  # counted once
    await storage.mark_search_stage(second, "chosen")
    await storage.mark_search_stage(first, "reviewed")
    for status in (S.PAID, S.CONFIRMED, S.REFUNDED, S.AWAITING_PAYMENT, S.EXPIRED):
        await storage.create_booking(new_booking(status=status))

    assert await storage.funnel(since) == {"search": 3, "chosen": 2, "reviewed": 1, "paid": 3}
    assert await storage.funnel(utcnow() + timedelta(hours=1)) == {
        "search": 0,
        "chosen": 0,
        "reviewed": 0,
        "paid": 0,
    }
    with pytest.raises(ValueError, match="funnel stage"):
        await storage.mark_search_stage(first, "paid")


async def test_funnel_counts_as_paid_only_bookings_whose_money_was_taken(
    storage: Storage,
) -> None:
    """A booking given up before paying ends cancelled, like a paid trip cancelled later: the
    admin's /stats counts only the second as paid."""
    since = utcnow() - timedelta(hours=1)
    for _ in range(3):
        await storage.log_search(search())
    given_up = await storage.create_booking(new_booking(status=S.AWAITING_PAYMENT))
    assert await storage.transition(given_up.id, S.AWAITING_PAYMENT, S.CANCELLED)
    trip = await storage.create_booking(new_booking(status=S.AWAITING_PAYMENT))
    assert await storage.transition(trip.id, S.AWAITING_PAYMENT, S.PAID, payment_intent_id="pi_1")
    assert await storage.transition(trip.id, S.PAID, S.CONFIRMED)
    assert await storage.transition(trip.id, S.CONFIRMED, S.CANCELLED)
    failed = await storage.create_booking(new_booking(status=S.PAID))
    assert await storage.transition(failed.id, S.PAID, S.FAILED)

    assert (await storage.funnel(since))["paid"] == 2
    stats = await AdminService(storage).stats(Period.TODAY)
    assert "→ paid 2 (67%)" in stats


async def test_stats_count_bookings_revenue_searches_users_and_routes(storage: Storage) -> None:
    since = utcnow() - timedelta(hours=1)
    await storage.upsert_profile(1)
    await storage.upsert_profile(2)
    await storage.create_booking(new_booking(amount=1999, status=S.PAID))
    await storage.create_booking(new_booking(amount=1000, status=S.CONFIRMED))
    await storage.create_booking(new_booking(amount=12000, currency="JPY", status=S.PAID))
    await storage.create_booking(new_booking(amount=5000, status=S.AWAITING_PAYMENT))
    await storage.create_booking(new_booking(amount=7000, status=S.REFUNDED))
    for route in [("LIS", "BCN"), ("OPO", "LHR"), ("LIS", "BCN"), ("LIS", "BCN"), ("OPO", "LHR")]:
        await storage.log_search(search(*route))
    await storage.log_search(search("AMS", "BER"))

    stats = await storage.stats(since)

    assert stats.bookings_by_status[S.PAID] == 2
    assert stats.bookings_by_status[S.CONFIRMED] == 1
    assert stats.bookings_by_status[S.AWAITING_PAYMENT] == 1
    assert stats.bookings_by_status[S.DRAFT] == 0
    assert stats.revenue == (
        Money(amount=2999, currency="EUR"),
        Money(amount=12000, currency="JPY"),
    )
    assert stats.searches == 6
    assert stats.new_users == 2
    assert [(r.origin, r.destination, r.count) for r in stats.top_routes] == [
        ("LIS", "BCN", 3),
        ("OPO", "LHR", 2),
        ("AMS", "BER", 1),
    ]
    later = await storage.stats(utcnow() + timedelta(hours=1))
    assert sum(later.bookings_by_status.values()) == 0
    assert (later.revenue, later.searches, later.new_users, later.top_routes) == ((), 0, 0, ())


async def test_audit_entries_are_listed_newest_first(storage: Storage) -> None:
    await storage.append_audit(AuditEntry(admin_id=9, action="block", target="42"))
    await storage.append_audit(
        AuditEntry(admin_id=9, action="refund", target="ABC234", details={"amount": 1999})
    )
    await storage.append_audit(AuditEntry(admin_id=8, action="broadcast", details={"n": 3}))

    entries = await storage.list_audit()

    assert [(e.admin_id, e.action, e.target) for e in entries] == [
        (8, "broadcast", None),
        (9, "refund", "ABC234"),
        (9, "block", "42"),
    ]
    assert entries[1].details == {"amount": 1999}
    assert all(e.created_at is not None for e in entries)
    assert len(await storage.list_audit(limit=2)) == 2


# retention ---------------------------------------------------------------------------------------
def _cutoffs(audit: datetime, events: datetime, searches: datetime, **extra: int) -> dict[str, Any]:
    return {
        "denied_audit_before": audit,
        "payment_events_before": events,
        "searches_before": searches,
        **extra,
    }


async def test_retention_deletes_only_old_rows_that_nothing_still_needs(storage: Storage) -> None:
    bookings = {
        status: await storage.create_booking(new_booking(status=status))
        for status in (S.AWAITING_PAYMENT, S.PAID, S.CONFIRMED, S.CANCELLED, S.REFUNDED, S.EXPIRED)
    }
    for status, booking in bookings.items():
        assert await storage.record_payment_event(f"evt_{status.value}", "x", booking.id)
    assert await storage.record_payment_event("evt_unlinked", "account.updated")
    for command in ("/stats", "/refund"):
        await storage.append_audit(AuditEntry(admin_id=77, action="denied", target=command))
    await storage.append_audit(AuditEntry(admin_id=9, action="refund", target="ABC234"))
    for _ in range(3):
        await storage.log_search(search())
    hour_ago, in_an_hour = utcnow() - timedelta(hours=1), utcnow() + timedelta(hours=1)

    # Nothing is older than its cutoff yet: nothing goes.
    nothing = await storage.delete_expired_records(**_cutoffs(hour_ago, hour_ago, hour_ago))
    assert nothing == {"admin_audit": 0, "payment_events": 0, "flight_searches": 0}

    # Every row is past its cutoff: only what nothing needs goes.
    deleted = await storage.delete_expired_records(**_cutoffs(in_an_hour, in_an_hour, in_an_hour))
    assert deleted == {"admin_audit": 2, "payment_events": 3, "flight_searches": 3}
    # The admin's own action stays; the refused attempts are gone.
    assert [(e.action, e.target) for e in await storage.list_audit()] == [("refund", "ABC234")]
    # Bookings that can still move keep their ledger, so a redelivery is still known...
    for status in (S.AWAITING_PAYMENT, S.PAID, S.CONFIRMED, S.CANCELLED):
        booking = bookings[status]
        assert [e[0] for e in await storage.list_payment_events(booking.id)] == [
            f"evt_{status.value}"
        ]
        assert not await storage.record_payment_event(f"evt_{status.value}", "x", booking.id)
    # ...finished ones and unlinked events lost theirs; every booking itself stays.
    for status in (S.REFUNDED, S.EXPIRED):
        assert await storage.list_payment_events(bookings[status].id) == []
    assert await storage.record_payment_event("evt_unlinked", "account.updated")
    for booking in bookings.values():
        assert await storage.get_booking(booking.id) is not None
    assert (await storage.stats(hour_ago)).searches == 0
    assert (await storage.stats(hour_ago)).bookings_by_status[S.PAID] == 1


async def test_retention_goes_oldest_first_a_batch_at_a_time_with_a_cutoff_per_table(
    storage: Storage,
) -> None:
    for command in ("/a", "/b", "/c"):
        await storage.append_audit(AuditEntry(admin_id=77, action="denied", target=command))
    for origin in ("AAA", "BBB", "CCC"):
        await storage.log_search(search(origin))
    assert await storage.record_payment_event("evt_old", "account.updated")
    hour_ago, in_an_hour = utcnow() - timedelta(hours=1), utcnow() + timedelta(hours=1)

    # Only the audit's cutoff has passed, and only two rows go per call.
    first = await storage.delete_expired_records(
        **_cutoffs(in_an_hour, hour_ago, hour_ago, limit=2)
    )
    assert first == {"admin_audit": 2, "payment_events": 0, "flight_searches": 0}
    assert [e.target for e in await storage.list_audit()] == ["/c"]  # the newest is left

    second = await storage.delete_expired_records(
        **_cutoffs(in_an_hour, hour_ago, in_an_hour, limit=2)
    )
    assert second == {"admin_audit": 1, "payment_events": 0, "flight_searches": 2}
    routes = (await storage.stats(hour_ago)).top_routes
    assert [route.origin for route in routes] == ["CCC"]
    assert not await storage.record_payment_event("evt_old", "account.updated")


# user data ---------------------------------------------------------------------------------------
async def test_delete_user_data_erases_the_profile_and_anonymises_bookings(
    storage: Storage,
) -> None:
    await storage.upsert_profile(1, username="ana_s", first_name="Ana")
    await storage.save_travellers(1, (traveller(),))
    mine = [await storage.create_booking(new_booking(user_id=1, status=S.PAID)) for _ in range(2)]
    theirs = await storage.create_booking(new_booking(user_id=2))
    await storage.log_search(search(user_id=1))

    assert await storage.delete_user_data(1) == 2

    assert await storage.get_profile(1) is None
    assert await storage.find_profile_by_username("ana_s") is None
    for booking in mine:
        stored = await storage.get_booking(booking.id)
        assert stored is not None
        dumped = stored.model_dump_json()
        for personal in ("Ana", "Silva", "P1234567", "ana@example.com", "+351912345678", "1990"):
            assert personal not in dumped
        (erased,) = stored.travellers
        assert erased.category is PassengerCategory.ADULT
        assert (stored.reference, stored.amount, stored.status) == (
            booking.reference,
            booking.amount,
            S.PAID,
        )
    assert await storage.get_booking(theirs.id) == theirs
    assert await storage.delete_user_data(3) == 0


# broadcasts --------------------------------------------------------------------------------------
async def test_broadcast_has_one_pending_delivery_per_distinct_recipient(storage: Storage) -> None:
    broadcast = await storage.create_broadcast(9, "Spring sale!", [3, 1, 2, 3, 1])

    assert broadcast.status is BroadcastStatus.RUNNING
    assert (broadcast.admin_id, broadcast.text, broadcast.total) == (9, "Spring sale!", 3)
    assert await storage.get_broadcast(broadcast.id) == broadcast
    assert await storage.get_broadcast(broadcast.id + 1000) is None
    assert await storage.list_running_broadcasts() == [broadcast]
    counts = await storage.broadcast_counts(broadcast.id)
    assert counts == {
        "pending": 3,
        "sending": 0,
        "sent": 0,
        "failed": 0,
        "bot_blocked": 0,
        "interrupted": 0,
    }
    with pytest.raises(ValueError, match="text"):
        await storage.create_broadcast(9, "", [1])


async def test_concurrent_claimers_never_get_the_same_recipient(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    other_worker = await storage_factory.open()
    recipients = list(range(1, 61))
    broadcast = await storage.create_broadcast(9, "hello", recipients)

    async def worker(store: Storage) -> list[int]:
        taken: list[int] = []
        while batch := await store.claim_deliveries(broadcast.id, 4):
            taken.extend(batch)
        return taken

    claimed = await asyncio.gather(*(worker(s) for s in [storage, other_worker] * 4))

    everything = [user for batch in claimed for user in batch]
    assert sorted(everything) == recipients  # everyone once, nobody twice
    counts = await storage.broadcast_counts(broadcast.id)
    assert (counts["pending"], counts["sending"]) == (0, 60)


async def test_delivery_outcomes_are_recorded_once(storage: Storage) -> None:
    broadcast = await storage.create_broadcast(9, "hello", [1, 2, 3, 4])
    assert await storage.claim_deliveries(broadcast.id, 3) == [1, 2, 3]

    assert await storage.finish_delivery(broadcast.id, 1, DeliveryStatus.SENT)
    assert await storage.finish_delivery(broadcast.id, 2, DeliveryStatus.BOT_BLOCKED)
    assert await storage.finish_delivery(broadcast.id, 3, DeliveryStatus.FAILED)
    assert not await storage.finish_delivery(broadcast.id, 1, DeliveryStatus.FAILED)
    assert not await storage.finish_delivery(broadcast.id, 4, DeliveryStatus.SENT)  # not claimed
    with pytest.raises(ValueError, match="delivery ends"):
        await storage.finish_delivery(broadcast.id, 4, DeliveryStatus.PENDING)

    counts = await storage.broadcast_counts(broadcast.id)
    assert (counts["sent"], counts["bot_blocked"], counts["failed"], counts["pending"]) == (
        1,
        1,
        1,
        1,
    )
    assert await storage.claim_deliveries(broadcast.id, 10) == [4]
    assert await storage.finish_delivery(broadcast.id, 4, DeliveryStatus.SENT)
    assert await storage.claim_deliveries(broadcast.id, 10) == []
    assert await storage.set_broadcast_status(
        broadcast.id, BroadcastStatus.RUNNING, BroadcastStatus.DONE
    )
    assert await storage.list_running_broadcasts() == []


async def test_a_cancelled_broadcast_hands_out_nobody(storage: Storage) -> None:
    broadcast = await storage.create_broadcast(9, "hello", [1, 2, 3])

    assert await storage.set_broadcast_status(
        broadcast.id, BroadcastStatus.RUNNING, BroadcastStatus.CANCELLED
    )
    assert not await storage.set_broadcast_status(
        broadcast.id, BroadcastStatus.RUNNING, BroadcastStatus.DONE
    )
    with pytest.raises(IllegalTransitionError):
        await storage.set_broadcast_status(
            broadcast.id, BroadcastStatus.CANCELLED, BroadcastStatus.RUNNING
        )
    assert await storage.claim_deliveries(broadcast.id, 10) == []
    cancelled = await storage.get_broadcast(broadcast.id)
    assert cancelled is not None
    assert cancelled.status is BroadcastStatus.CANCELLED
    assert (await storage.broadcast_counts(broadcast.id))["pending"] == 3


async def test_one_worker_at_a_time_holds_a_broadcast(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    other = await storage_factory.open()
    broadcast = await storage.create_broadcast(9, "hello", [1, 2])
    now = utcnow()
    soon, later = now + timedelta(seconds=30), now + timedelta(seconds=60)

    async def claim(store: Storage, owner: str) -> bool:
        return await store.claim_broadcast_lease(broadcast.id, owner, now=now, until=soon)

    # Twenty workers at once: exactly one wins.
    won = await asyncio.gather(*(claim(s, f"w{i}") for i, s in enumerate([storage, other] * 10)))
    assert won.count(True) == 1
    holder = f"w{won.index(True)}"
    assert not await claim(storage, "newcomer")
    assert await storage.claim_broadcast_lease(broadcast.id, holder, now=now, until=later)
    # Once the holder lets it run out, someone else may take over.
    assert await other.claim_broadcast_lease(
        broadcast.id,
        "newcomer",
        now=later + timedelta(seconds=1),
        until=later + timedelta(seconds=30),
    )
    assert not await storage.claim_broadcast_lease(broadcast.id, holder, now=later, until=later)
    # Released: free at once.
    await other.release_broadcast_lease(broadcast.id, holder)  # not the holder: no effect
    assert not await claim(storage, "third")
    await other.release_broadcast_lease(broadcast.id, "newcomer")
    assert await claim(storage, "third")
    # A broadcast that is not running has no lease to give.
    assert await storage.set_broadcast_status(
        broadcast.id, BroadcastStatus.RUNNING, BroadcastStatus.DONE
    )
    assert not await claim(storage, "third")
    assert not await claim(storage, "fourth")


async def test_after_a_crash_in_flight_recipients_are_not_sent_twice(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    broadcast = await storage.create_broadcast(9, "hello", list(range(1, 11)))
    before_claim = utcnow() - timedelta(seconds=1)
    assert await storage.claim_deliveries(broadcast.id, 3) == [1, 2, 3]
    assert await storage.finish_delivery(broadcast.id, 1, DeliveryStatus.SENT)
    # ...the worker dies here, with 2 and 3 in flight.

    restarted = await storage_factory.open()
    (running,) = await restarted.list_running_broadcasts()
    assert await restarted.recover_stuck_deliveries(running.id, claimed_before=before_claim) == []
    assert await restarted.recover_stuck_deliveries(running.id, claimed_before=utcnow()) == [2, 3]

    resumed: list[int] = []
    while batch := await restarted.claim_deliveries(running.id, 4):
        resumed.extend(batch)
        for user_id in batch:
            assert await restarted.finish_delivery(running.id, user_id, DeliveryStatus.SENT)
    assert resumed == list(range(4, 11))
    assert not await storage.finish_delivery(running.id, 2, DeliveryStatus.SENT)  # too late
    counts = await restarted.broadcast_counts(running.id)
    assert (counts["sent"], counts["interrupted"], counts["pending"], counts["sending"]) == (
        8,
        2,
        0,
        0,
    )


async def test_released_deliveries_go_back_to_the_queue(storage: Storage) -> None:
    broadcast = await storage.create_broadcast(9, "hello", [1, 2, 3])
    assert await storage.claim_deliveries(broadcast.id, 3) == [1, 2, 3]
    assert await storage.finish_delivery(broadcast.id, 1, DeliveryStatus.SENT)

    assert await storage.release_deliveries(broadcast.id, [1, 2, 3]) == 2  # 1 already sent
    assert await storage.release_deliveries(broadcast.id, []) == 0
    assert await storage.claim_deliveries(broadcast.id, 10) == [2, 3]


async def test_ping_answers(storage: Storage) -> None:
    await storage.ping()


# trip reminders ----------------------------------------------------------------------------------
def departing(
    user_id: int,
    at: datetime,
    *,
    status: BookingStatus = S.CONFIRMED,
    returns: datetime | None = None,
) -> NewBooking:
    """A booking whose outbound flight leaves at ``at`` (and, with ``returns``, comes back)."""
    price = Money(amount=9900, currency="EUR")
    segments = [
        Segment(
            carrier="AF",
            flight_number="AF1025",
            origin="LIS",
            destination="CDG",
            departure=at,
            arrival=at + timedelta(hours=2, minutes=30),
        )
    ]
    if returns is not None:
        segments.append(
            Segment(
                carrier="AF",
                flight_number="AF1024",
                origin="CDG",
                destination="LIS",
                departure=returns,
                arrival=returns + timedelta(hours=2, minutes=40),
                inbound=True,
            )
        )
    return NewBooking(
        user_id=user_id,
        itinerary=Itinerary(
            id="demo-LIS-CDG", provider="demo", segments=tuple(segments), price=price
        ),
        travellers=(traveller(),),
        amount=price,
        status=status,
    )


async def test_the_reminders_switch_is_kept_on_the_profile(storage: Storage) -> None:
    off = await storage.set_reminders(7, False)  # someone never seen: the profile is made
    assert (off.user_id, off.reminders) == (7, False)
    again = await storage.upsert_profile(7, username="ana_s", first_name="Ana")
    assert not again.reminders  # refreshing the names keeps the choice
    assert (await storage.set_reminders(7, True)).reminders
    created = await storage.upsert_profile(8)
    assert created.reminders  # on unless turned off
    assert await storage.get_profile(7) == await storage.upsert_profile(
        7, username="ana_s", first_name="Ana"
    )


async def test_reminder_candidates_are_booked_trips_leaving_in_the_window(
    storage: Storage,
) -> None:
    now = datetime(2027, 3, 10, 12, 0, tzinfo=LISBON)
    for user_id in (1, 2, 3, 4, 5):
        await storage.upsert_profile(user_id)
    await storage.set_reminders(2, False)
    assert await storage.set_blocked(3, True)
    await storage.set_bot_blocked(4, True)
    paris = ZoneInfo("Europe/Paris")
    soon = await storage.create_booking(departing(1, now + timedelta(hours=5), status=S.PAID))
    # Written in another zone, compared as instants: 19:00 in Paris is 6 h after now.
    later = await storage.create_booking(
        departing(5, datetime(2027, 3, 10, 19, 0, tzinfo=paris), returns=now + timedelta(days=3))
    )
    edge = await storage.create_booking(departing(1, now + timedelta(hours=48)))
    for left_out in (
        departing(1, now + timedelta(hours=3), status=S.AWAITING_PAYMENT),
        departing(1, now + timedelta(hours=3), status=S.CANCELLED),
        departing(1, now + timedelta(hours=3), status=S.REFUNDED),
        departing(1, now - timedelta(minutes=1)),  # gone
        departing(1, now),  # leaving this instant: gone too
        departing(1, now + timedelta(hours=49)),  # not yet
        departing(1, now - timedelta(days=3), returns=now + timedelta(hours=4)),  # the return
        departing(2, now + timedelta(hours=4)),  # reminders off
        departing(3, now + timedelta(hours=4)),  # blocked by an admin
        departing(4, now + timedelta(hours=4)),  # blocked the bot
        departing(6, now + timedelta(hours=4)),  # no profile (erased with /deletedata)
    ):
        await storage.create_booking(left_out)

    def window(**more: Any) -> Any:
        return storage.list_reminder_candidates(
            "checkin", departs_after=now, departs_until=now + timedelta(hours=48), **more
        )

    assert [b.reference for b in await window()] == [
        soon.reference,
        later.reference,
        edge.reference,
    ]
    assert [b.reference for b in await window(limit=1, offset=1)] == [later.reference]
    assert await window(limit=0) == []
    assert await window(offset=3) == []

    assert await storage.claim_reminder(soon.id, "checkin")
    assert [b.id for b in await window()] == [later.id, edge.id]
    departure_day = await storage.list_reminder_candidates(
        "departure", departs_after=now, departs_until=now + timedelta(hours=24)
    )
    assert [b.id for b in departure_day] == [soon.id, later.id]  # each kind on its own
    with pytest.raises(ValueError, match="no reminder kind"):
        await storage.list_reminder_candidates("boarding", departs_after=now, departs_until=now)


async def test_return_reminder_candidates_are_round_trips_flying_home_in_the_window(
    storage: Storage,
) -> None:
    now = datetime(2027, 3, 10, 12, 0, tzinfo=LISBON)
    paris = ZoneInfo("Europe/Paris")
    for user_id in (1, 2, 3):
        await storage.upsert_profile(user_id)
    await storage.set_reminders(2, False)
    # Away already, flying home in 5 hours; its outbound flight is long gone.
    away = await storage.create_booking(
        departing(1, now - timedelta(days=2), returns=now + timedelta(hours=5))
    )
    # Leaving in 3 hours, home at 10:00 in Paris the day after tomorrow (46 h from now).
    weekend = await storage.create_booking(
        departing(3, now + timedelta(hours=3), returns=datetime(2027, 3, 12, 11, 0, tzinfo=paris))
    )
    one_way = await storage.create_booking(departing(1, now + timedelta(hours=4)))
    for left_out in (
        departing(1, now - timedelta(days=1), returns=now + timedelta(hours=49)),  # not yet
        departing(1, now - timedelta(days=1), returns=now - timedelta(minutes=1)),  # gone
        departing(1, now - timedelta(days=1), returns=now + timedelta(hours=6), status=S.CANCELLED),
        departing(1, now - timedelta(days=1), returns=now + timedelta(hours=6), status=S.REFUNDED),
        departing(2, now - timedelta(days=1), returns=now + timedelta(hours=6)),  # reminders off
    ):
        await storage.create_booking(left_out)

    def window(kind: str, **more: Any) -> Any:
        return storage.list_reminder_candidates(
            kind, departs_after=now, departs_until=now + timedelta(hours=48), **more
        )

    # Ranged over the flight home's departure, earliest first; a one-way trip has none.
    assert [b.id for b in await window("return_checkin")] == [away.id, weekend.id]
    assert [b.id for b in await window("return_departure", offset=1)] == [weekend.id]
    assert [b.id for b in await window("return_departure", limit=1)] == [away.id]
    # The outbound kinds still range over the outbound departure.
    assert [b.id for b in await window("checkin")] == [weekend.id, one_way.id]

    assert await storage.claim_reminder(weekend.id, "checkin")  # the outbound one's claim...
    assert [b.id for b in await window("return_checkin")] == [away.id, weekend.id]  # ...not this
    assert await storage.claim_reminder(away.id, "return_checkin")
    assert not await storage.claim_reminder(away.id, "return_checkin")
    assert [b.id for b in await window("return_checkin")] == [weekend.id]
    assert [b.id for b in await window("return_departure")] == [away.id, weekend.id]
    assert await storage.finish_reminder(away.id, "return_checkin", "sent")


async def test_the_due_selection_is_an_index_range_for_every_kind(
    storage_factory: StorageFactory,
) -> None:
    """Each kind reads its own departure index, never the whole table: SQLite names the index
    (``INDEXED BY``: a query that cannot use it is an error, not a scan), and PostgreSQL's plan
    for the function's query, shown by auto_explain, is a scan of that index."""
    storage = await storage_factory.open()
    now = utcnow()
    await storage.upsert_profile(1)
    await storage.create_booking(
        departing(1, now + timedelta(hours=5), returns=now + timedelta(hours=30))
    )
    expected = {
        "checkin": "bookings_departs_at_idx",
        "departure": "bookings_departs_at_idx",
        "return_checkin": "bookings_returns_at_idx",
        "return_departure": "bookings_returns_at_idx",
    }
    assert set(expected) == REMINDER_KINDS
    for kind in sorted(expected):
        found = await storage.list_reminder_candidates(
            kind, departs_after=now, departs_until=now + timedelta(hours=48)
        )
        assert len(found) == 1
    stack = storage_factory.stack
    if stack is None:
        return
    conn = await asyncpg.connect(stack.dsn)
    try:
        plans: list[str] = []
        conn.add_log_listener(lambda _conn, message: plans.append(message.message))
        for setting in (
            "load 'auto_explain'",
            "set auto_explain.log_min_duration = 0",
            "set auto_explain.log_nested_statements = on",
            "set auto_explain.log_level = notice",
            "set enable_seqscan = off",  # a handful of rows: a scan would win on cost alone
        ):
            await conn.execute(setting)
        for kind, index in expected.items():
            plans.clear()
            rows = await conn.fetch(
                "select id from public.reminder_candidates($1, $2, $3, 100, 0)",
                kind,
                now,
                now + timedelta(hours=48),
            )
            assert len(rows) == 1
            (inner,) = [plan for plan in plans if "public.booking_reminders" in plan]
            assert f"Index Scan using {index} on bookings" in inner or (
                f"Bitmap Index Scan on {index}" in inner
            ), inner
    finally:
        await conn.close()


async def test_bookings_made_before_the_reminders_migration_are_backfilled(
    storage_factory: StorageFactory,
) -> None:
    """The migration's backfill (SQL on the itinerary JSON, in each dialect) gives bookings
    made before it the same departures the bot writes: the outbound flight's, and the first
    flight home's, as instants whatever zone the segments are in."""
    storage = await storage_factory.open()
    now = utcnow()
    paris = ZoneInfo("Europe/Paris")
    await storage.upsert_profile(1)
    round_trip = await storage.create_booking(
        departing(
            1, (now + timedelta(hours=5)).astimezone(paris), returns=now + timedelta(hours=30)
        )
    )
    one_way = await storage.create_booking(departing(1, now + timedelta(hours=6)))

    async def candidates() -> list[list[str]]:
        return [
            [
                b.id
                for b in await storage.list_reminder_candidates(
                    kind, departs_after=now, departs_until=now + timedelta(hours=48)
                )
            ]
            for kind in ("checkin", "return_checkin")
        ]

    written = await candidates()
    assert written == [[round_trip.id, one_way.id], [round_trip.id]]
    forget = "update bookings set departs_at = null, returns_at = null"
    stack = storage_factory.stack
    if stack is None:
        (step,) = [s for s in SCHEMA_STEPS if any("returns_at" in statement for statement in s)]
        backfills = [statement for statement in step if "UPDATE bookings" in statement]
        with closing(sqlite3.connect(storage_factory.sqlite_path)) as raw, raw:
            raw.execute(forget)
            for statement in backfills:
                raw.execute(statement)
    else:
        migration = (MIGRATIONS_DIR / "20261204000200_reminders.sql").read_text()
        backfills = re.findall(r"^update public\.bookings .*?;$", migration, re.M | re.S)
        await stack.admin.execute(forget)
        for statement in backfills:
            await stack.admin.execute(statement)
    assert len(backfills) == 2
    assert await candidates() == written


async def test_a_reminder_is_claimed_exactly_once_under_concurrency(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    other_worker = await storage_factory.open()
    booking = await storage.create_booking(departing(1, utcnow() + timedelta(hours=20)))

    claims = await asyncio.gather(
        *(
            (storage if n % 2 else other_worker).claim_reminder(booking.id, "checkin")
            for n in range(20)
        )
    )

    assert claims.count(True) == 1
    assert await storage.claim_reminder(booking.id, "departure")  # another kind: its own claim
    assert await other_worker.finish_reminder(booking.id, "checkin", "sent")
    assert not await storage.finish_reminder(booking.id, "checkin", "failed")  # ended already
    assert not await storage.claim_reminder(booking.id, "checkin")  # and never claimed again
    assert not await storage.finish_reminder("not-a-booking", "checkin", "sent")
    with pytest.raises(ValueError, match="cannot end"):
        await storage.finish_reminder(booking.id, "departure", "sending")
    with pytest.raises(ValueError, match="no reminder kind"):
        await storage.claim_reminder(booking.id, "boarding")
    with pytest.raises(BookingNotFoundError):
        await storage.claim_reminder("00000000-0000-4000-8000-000000000000", "checkin")


# price alerts ------------------------------------------------------------------------------------
def watched_search(departure: date | None = None, destination: str = "BCN") -> SearchQuery:
    return SearchQuery(
        origin=Location(
            code="LIS", name="Lisbon", kind=LocationKind.CITY, country="PT", airports=("LIS",)
        ),
        destination=Location(
            code=destination,
            name=destination.title(),
            kind=LocationKind.AIRPORT,
            country="ES",
            airports=(destination,),
        ),
        departure=departure or date.today() + timedelta(days=60),
        currency="EUR",
    )


def new_alert(
    user_id: int = 1,
    *,
    due: datetime | None = None,
    target: int | None = 150_00,
    destination: str = "BCN",
) -> NewPriceAlert:
    return NewPriceAlert.watching(
        user_id,
        watched_search(destination=destination),
        target=Money(amount=target, currency="EUR") if target is not None else None,
        lowest=Money(amount=189_00, currency="EUR"),
        next_check_at=due or utcnow() + timedelta(hours=3),
    )


async def test_an_alert_reads_back_as_stored(storage: Storage) -> None:
    wanted = new_alert(target=99_50)
    alert = await storage.create_alert(wanted, limit=5)
    assert alert is not None
    assert alert.search() == watched_search()
    assert (alert.target, alert.lowest, alert.last_notified) == (
        Money(amount=99_50, currency="EUR"),
        Money(amount=189_00, currency="EUR"),
        None,
    )
    assert alert.next_check_at == wanted.next_check_at
    assert (alert.status, alert.version, alert.departure) == (
        AlertStatus.ACTIVE,
        1,
        wanted.departure,
    )
    assert await storage.get_alert(alert.id) == alert
    assert await storage.list_alerts(1) == [alert]
    assert await storage.list_alerts(2) == []
    drops = await storage.create_alert(new_alert(target=None), limit=5)
    assert drops is not None
    assert drops.target is None


async def test_a_user_keeps_at_most_the_limit_of_unfinished_alerts(storage: Storage) -> None:
    made = [await storage.create_alert(new_alert(), limit=3) for _ in range(3)]
    assert all(made)
    assert await storage.create_alert(new_alert(), limit=3) is None
    assert await storage.create_alert(new_alert(user_id=2), limit=3) is not None  # per user
    first = made[0]
    assert first is not None
    paused = await storage.update_alert(
        first.id, expected_version=1, update=AlertUpdate(status=AlertStatus.PAUSED)
    )
    assert paused is not None
    assert await storage.create_alert(new_alert(), limit=3) is None  # paused still counts
    await storage.update_alert(
        first.id, expected_version=2, update=AlertUpdate(status=AlertStatus.FINISHED)
    )
    assert await storage.create_alert(new_alert(), limit=3) is not None  # finished does not
    assert [a.status for a in await storage.list_alerts(1)] == [AlertStatus.ACTIVE] * 3


async def test_concurrent_watches_never_pass_the_limit(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    other_worker = await storage_factory.open()
    made = await asyncio.gather(
        *(store.create_alert(new_alert(), limit=5) for store in [storage, other_worker] * 4)
    )
    assert sum(alert is not None for alert in made) == 5
    assert len(await storage.list_alerts(1)) == 5


async def test_due_alerts_are_the_active_ones_whose_time_came_longest_waiting_first(
    storage: Storage,
) -> None:
    now = utcnow()
    later = await storage.create_alert(new_alert(due=now - timedelta(minutes=1)), limit=9)
    earliest = await storage.create_alert(new_alert(due=now - timedelta(hours=2)), limit=9)
    exactly_now = await storage.create_alert(new_alert(due=now), limit=9)
    await storage.create_alert(new_alert(due=now + timedelta(seconds=1)), limit=9)
    paused = await storage.create_alert(new_alert(due=now - timedelta(hours=5)), limit=9)
    assert later and earliest and exactly_now and paused  # noqa: PT018 - narrows the types
    await storage.update_alert(
        paused.id, expected_version=1, update=AlertUpdate(status=AlertStatus.PAUSED)
    )

    due = await storage.list_due_alerts(now, limit=10)
    assert [a.id for a in due] == [earliest.id, later.id, exactly_now.id]
    assert [a.id for a in await storage.list_due_alerts(now, limit=2)] == [earliest.id, later.id]
    assert await storage.list_due_alerts(now, limit=0) == []


async def test_an_alert_changes_only_from_the_version_read_and_one_of_two_wins(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    other_worker = await storage_factory.open()
    alert = await storage.create_alert(new_alert(), limit=5)
    assert alert is not None
    when = utcnow() + timedelta(hours=3)
    claims = await asyncio.gather(
        *(
            store.update_alert(
                alert.id,
                expected_version=alert.version,
                update=AlertUpdate(next_check_at=when, last_notified_minor=120_00),
            )
            for store in [storage, other_worker] * 3
        )
    )
    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1
    (won,) = winners
    assert (won.version, won.next_check_at, won.last_notified_minor) == (2, when, 120_00)
    assert (won.target_minor, won.lowest_minor) == (alert.target_minor, alert.lowest_minor)
    stale = await storage.update_alert(
        alert.id, expected_version=1, update=AlertUpdate(lowest_minor=1)
    )
    assert stale is None
    assert await storage.get_alert(alert.id) == won
    assert (
        await storage.update_alert(10**9, expected_version=1, update=AlertUpdate(lowest_minor=1))
        is None
    )


async def test_only_its_owner_deletes_an_alert_and_deletedata_erases_them_all(
    storage: Storage,
) -> None:
    mine = [await storage.create_alert(new_alert(user_id=1), limit=5) for _ in range(2)]
    theirs = await storage.create_alert(new_alert(user_id=2), limit=5)
    assert mine[0] and mine[1] and theirs  # noqa: PT018 - narrows the types
    assert not await storage.delete_alert(mine[0].id, user_id=2)
    assert await storage.delete_alert(mine[0].id, user_id=1)
    assert not await storage.delete_alert(mine[0].id, user_id=1)
    assert await storage.get_alert(mine[0].id) is None

    await storage.upsert_profile(1, first_name="Ana")
    await storage.delete_user_data(1)
    assert await storage.list_alerts(1) == []
    assert await storage.get_alert(mine[1].id) is None
    assert await storage.list_alerts(2) == [theirs]
