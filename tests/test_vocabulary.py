"""The bot's shared words, each with one home: what a status allows, what a refund gives back,
who is travelling, how a personal detail is masked and how a day is written. Every place a
traveller or an admin meets one of them must say it the same way."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot import web_payments
from conversations.data import BookingDraft, TravellerDraft
from conversations.flows import booking as booking_flow
from conversations.flows import common
from services import admin, texts
from services import travellers as fields
from services.bookings import (
    AlreadyRefundedError,
    NothingToRefundError,
    cancellation_refund,
    refund_refusal,
)
from services.flights.dates import format_date, format_day
from services.mail.compose import confirmation_email
from services.mail.ics import booking_calendar
from services.models import (
    BOOKED_STATUSES,
    HOLDS_PAYMENT_STATUSES,
    LIVE_STATUSES,
    PAST_PAYMENT_STATUSES,
    REFUND_FROM_STATUSES,
    TRANSITIONS,
    UNPAID_STATUSES,
    Booking,
    BookingStatus,
    Gender,
    Itinerary,
    PassengerCategory,
    Passengers,
    Profile,
    Segment,
    Traveller,
    mask_email,
    mask_phone,
)
from services.money import Money
from services.payments.stripe import product_name

S = BookingStatus
PASSPORT = "X9876544567"
EMAIL = "maria.silva@example.com"
PHONE = "+351912345958"
LISBON, TOKYO = ZoneInfo("Europe/Lisbon"), ZoneInfo("Asia/Tokyo")


def _traveller(
    category: PassengerCategory = PassengerCategory.ADULT, **changes: object
) -> Traveller:
    values: dict[str, object] = {
        "category": category,
        "first_name": "MARIA",
        "last_name": "SILVA",
        "birth_date": date(1990, 5, 17),
        "gender": Gender.FEMALE,
        "nationality": "PT",
        "passport_number": PASSPORT,
        "passport_expiry": date(2031, 8, 20),
        "email": EMAIL,
        "phone": PHONE,
    }
    return Traveller.model_validate({**values, **changes})


def _booking(status: BookingStatus = S.CONFIRMED, **changes: object) -> Booking:
    itinerary = Itinerary(
        id="demo-1",
        provider="demo",
        segments=(
            Segment(
                carrier="TP",
                flight_number="TP1234",
                origin="LIS",
                destination="NRT",
                departure=datetime(2027, 4, 9, 10, 35, tzinfo=LISBON),
                arrival=datetime(2027, 4, 10, 6, 20, tzinfo=TOKYO),
            ),
        ),
        price=Money(amount=44_000, currency="EUR"),
    )
    now = datetime(2027, 1, 5, 12, 0, tzinfo=UTC)
    values: dict[str, object] = {
        "id": "b-1",
        "reference": "K7QW2P",
        "user_id": 42,
        "itinerary": itinerary,
        "travellers": (_traveller(),),
        "amount": itinerary.price,
        "status": status,
        "payment_intent_id": "pi_1",
        "created_at": now,
        "updated_at": now,
    }
    return Booking.model_validate({**values, **changes})


def _eur(minor: int) -> Money:
    return Money(amount=minor, currency="EUR")


# what a status allows ---------------------------------------------------------------------------
def _reaches(start: BookingStatus, goal: BookingStatus) -> bool:
    seen, todo = set(), [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_unpaid_means_a_payment_can_still_come_in() -> None:
    for status in BookingStatus:
        assert status.unpaid == _reaches(status, S.PAID), status
    assert set(PAST_PAYMENT_STATUSES) == set(BookingStatus) - set(UNPAID_STATUSES)


def test_a_full_refund_leaves_only_from_what_transitions_allow() -> None:
    assert set(REFUND_FROM_STATUSES) == {S.FAILED, S.CANCELLED}
    assert all(S.REFUNDED in TRANSITIONS[status] for status in REFUND_FROM_STATUSES)


def test_money_is_held_after_payment_until_refunded_and_a_trip_is_on_when_paid_or_confirmed() -> (
    None
):
    assert [s for s in BookingStatus if s.holds_payment] == [
        S.PAID,
        S.CONFIRMED,
        S.FAILED,
        S.CANCELLED,
    ]
    assert [s for s in BookingStatus if s.booked] == [S.PAID, S.CONFIRMED]
    assert all(_reaches(status, S.REFUNDED) for status in HOLDS_PAYMENT_STATUSES)
    assert set(BOOKED_STATUSES) <= set(HOLDS_PAYMENT_STATUSES)


def test_payment_events_are_kept_while_a_booking_can_still_move_with_money() -> None:
    assert not S.REFUNDED.live
    assert not S.EXPIRED.live
    assert [s for s in BookingStatus if s.live] == list(LIVE_STATUSES)
    assert all(TRANSITIONS[status] for status in LIVE_STATUSES)


@pytest.mark.parametrize(
    "named",
    [
        UNPAID_STATUSES,
        PAST_PAYMENT_STATUSES,
        BOOKED_STATUSES,
        HOLDS_PAYMENT_STATUSES,
        REFUND_FROM_STATUSES,
        LIVE_STATUSES,
    ],
)
def test_status_lists_keep_the_enum_order(named: tuple[BookingStatus, ...]) -> None:
    """Bookings listed status by status (erasure, open links) come back in one order."""
    assert list(named) == [s for s in BookingStatus if s in named]


# what a refund gives back -----------------------------------------------------------------------
def test_a_cancellation_refunds_what_the_airline_gives_never_more_than_is_left() -> None:
    booking = _booking()
    assert cancellation_refund(booking, None) == _eur(44_000)  # no airline order: everything
    assert cancellation_refund(booking, _eur(30_000)) == _eur(30_000)
    assert cancellation_refund(booking, _eur(50_000)) == _eur(44_000)
    partly = _booking(refunded_minor=10_000)  # an admin gave some back already
    assert cancellation_refund(partly, None) == _eur(34_000)
    assert cancellation_refund(partly, _eur(40_000)) == _eur(34_000)
    assert cancellation_refund(partly, _eur(20_000)) == _eur(20_000)


def test_an_admin_refund_goes_ahead_while_money_is_held() -> None:
    for status in HOLDS_PAYMENT_STATUSES:
        assert refund_refusal(_booking(status)) is None
        assert refund_refusal(_booking(status), _eur(100)) is None


def test_an_admin_refund_is_refused_with_the_reason() -> None:
    def why(booking: Booking, amount: Money | None = None) -> str:
        refusal = refund_refusal(booking, amount)
        assert refusal is not None
        return str(refusal)

    ref = "Nothing to refund on booking K7QW2P: "
    assert why(_booking(S.AWAITING_PAYMENT, payment_intent_id=None)) == (
        ref + "no payment was taken (status: Awaiting payment)."
    )
    assert why(_booking(S.CANCELLED, payment_intent_id=None)) == (
        ref + "no payment is recorded on it."
    )
    done = _booking(S.REFUNDED, refunded_minor=44_000)
    assert why(done) == ref + "it has already been refunded (€440.00)."
    assert isinstance(refund_refusal(done), AlreadyRefundedError)
    in_flight = _booking(refund_pending_minor=44_000)
    assert why(in_flight) == ref + "it is already being refunded right now."
    assert why(_booking(), _eur(50_000)) == (
        "€500.00 is more than booking K7QW2P was paid (€440.00)."
    )
    assert "is more than is left to refund" in why(_booking(refunded_minor=40_000), _eur(5_000))
    assert why(_booking(), Money(amount=100, currency="USD")) == (
        "Booking K7QW2P was paid in EUR, not USD."
    )
    assert why(_booking(), _eur(0)) == "The refund amount must be more than zero."
    assert isinstance(refund_refusal(_booking(), _eur(0)), NothingToRefundError)


# who is travelling -------------------------------------------------------------------------------
def test_a_party_is_counted_from_its_travellers_and_back() -> None:
    party = Passengers(adults=2, children=1, infants=1)
    travellers = tuple(_traveller(category) for category in party.categories)
    assert [t.category for t in travellers] == [
        PassengerCategory.ADULT,
        PassengerCategory.ADULT,
        PassengerCategory.CHILD,
        PassengerCategory.INFANT,
    ]
    assert Passengers.counting(travellers) == party
    assert _booking(travellers=travellers).passengers == party


def test_a_party_without_an_adult_is_refused_not_guessed() -> None:
    with pytest.raises(ValidationError):
        Passengers.counting([_traveller(PassengerCategory.CHILD)])


# traveller fields -------------------------------------------------------------------------------
def test_the_lead_traveller_gives_every_field_the_others_the_passport_ones() -> None:
    assert fields.fields_for(0) == fields.FIELD_ORDER
    assert fields.fields_for(1) == fields.PERSON_FIELDS
    assert fields.TravellerField.EMAIL not in fields.fields_for(2)
    assert [f.label for f in fields.fields_for(0)][-2:] == ["Email", "Phone"]


# masks -------------------------------------------------------------------------------------------
def test_masks_show_just_enough() -> None:
    assert mask_email(EMAIL) == "m•••@example.com"
    assert mask_email("odd@name@example.com") == "o•••@example.com"
    assert mask_email("@example.com") == "•••"
    assert mask_email(None) == "—"
    assert mask_phone(PHONE) == "•••• 958"  # like a document: its length is not shown either
    assert mask_phone("12") == "••••"
    assert mask_phone(None) == "—"


def test_a_passport_number_is_masked_the_same_wherever_it_is_shown() -> None:
    booking = _booking()
    profile = Profile(user_id=42, saved_travellers=(_traveller(),))
    email = confirmation_email(booking, sender="bot@example.com")
    assert email is not None
    body = email.get_body(("plain",))
    assert body is not None
    draft = BookingDraft(
        itinerary=booking.itinerary,
        travellers=[
            TravellerDraft(
                category=PassengerCategory.ADULT,
                values=booking.travellers[0].model_dump(
                    mode="json", exclude={"category", "passport_masked"}
                ),
            )
        ],
    )
    shown = {
        "confirmation": texts.confirmation(booking).text,
        "/mybookings detail": common.booking_view(
            booking, datetime(2027, 1, 5, 12, tzinfo=UTC)
        ).text,
        "/mydata": common._mydata_summary(profile, [booking]),
        "/mydata file": json.dumps(common._stored_data(profile, [booking]), ensure_ascii=False),
        "review": "\n".join(booking_flow._traveller_lines(draft)),
        "email": body.get_content(),
        "admin /booking": admin.booking_text(booking, [], profile),
    }
    for where, text in shown.items():
        assert "•••• 4567" in text, where
        assert PASSPORT not in text, where
        assert "98765" not in text, where
    admin_view = shown["admin /booking"]
    assert "m•••@example.com" in admin_view
    assert "•••• 958" in admin_view
    assert EMAIL not in admin_view
    assert "912345" not in admin_view


# days --------------------------------------------------------------------------------------------
def test_a_travel_day_carries_its_year_only_when_it_is_not_this_one() -> None:
    today = date(2027, 1, 5)
    assert format_day(date(2027, 4, 9), today=today) == "Fri 9 Apr"
    assert format_day(date(2028, 1, 4), today=today) == "Tue 4 Jan 2028"
    assert format_day(date(2027, 4, 9), today=today, always_year=True) == "Fri 9 Apr 2027"
    late = datetime(2027, 4, 9, 23, 50, tzinfo=LISBON)  # already the 10th in UTC
    assert format_day(late, today=today) == "Fri 9 Apr"


def test_a_day_of_record_always_has_its_year_and_no_weekday() -> None:
    assert format_date(date(1990, 5, 17)) == "17 May 1990"
    assert format_date(date(2031, 8, 1)) == "1 Aug 2031"


def test_every_place_writes_the_trip_day_alike() -> None:
    """The chat, the payment page, the email and the calendar file name the flight's day as
    format_day does (the calendar file always with the year: it outlives this one)."""
    booking = _booking()
    day = format_day(booking.itinerary.departure)
    assert day.startswith("Fri 9 Apr")
    assert day in texts.confirmation(booking).text
    assert day in product_name(booking)
    email = confirmation_email(booking, sender="bot@example.com")
    assert email is not None
    body = email.get_body(("plain",))
    assert body is not None
    assert day in body.get_content()
    calendar = booking_calendar(booking).decode().replace("\r\n ", "")
    assert "Departs LIS Fri 9 Apr 2027 10:35 local time" in calendar
    assert "Arrives NRT Sat 10 Apr 2027 06:20 local time" in calendar


def test_pay_by_reads_the_same_in_the_chat_the_booking_and_the_checkout_page() -> None:
    """A deadline can come in another zone (an airline's hold as it wrote it): every "Pay by"
    gives it as one time in UTC, since the traveller's own zone is unknown."""
    until = datetime(2027, 4, 1, 18, 20, tzinfo=LISBON)  # summer time: 17:20 UTC
    booking = _booking(S.AWAITING_PAYMENT, payment_intent_id=None, payment_deadline=until)
    message = texts.payment_link(booking, "https://pay.example/s", until, sandbox=True)
    assert "Pay by <b>17:20 UTC</b>" in message.text
    assert "Pay by 17:20 UTC" in texts.booking_detail(booking)
    assert "<dt>Pay by</dt><dd>17:20 UTC</dd>" in web_payments._summary(booking)


def test_birth_and_expiry_dates_read_the_same_for_the_traveller_and_the_admin() -> None:
    booking = _booking()
    profile = Profile(user_id=42, saved_travellers=(_traveller(),))
    for text in (
        admin.booking_text(booking, [], profile),
        common._mydata_summary(profile, [booking]),
    ):
        assert "born 17 May 1990" in text
    assert "valid to 20 Aug 2031" in admin.booking_text(booking, [], profile)
