"""The Duffel adapter against the local Duffel stand-in: mapping, the order life cycle, errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
import pytest_asyncio

from services.flights.base import (
    FareIncreasedError,
    FareUnavailableError,
    ProviderError,
    ProviderUnavailableError,
)
from services.flights.contacts import e164
from services.flights.duffel import (
    DuffelProvider,
    MalformedWebhookError,
    parse_event,
    sign,
    verify_signature,
)
from services.flights.places import PlaceIndex
from services.models import (
    Booking,
    Gender,
    Itinerary,
    Location,
    PassengerCategory,
    Passengers,
    SearchQuery,
    Traveller,
    today_anywhere,
)
from tests.standins.duffel import TOKEN, DuffelStandIn
from tests.support.days import next_winter_day

DEPARTURE = next_winter_day(today_anywhere())


@pytest.fixture(scope="module")
def places() -> PlaceIndex:
    return PlaceIndex.default()


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[DuffelStandIn]:
    server = DuffelStandIn()
    await server.start()
    yield server
    await server.close()


@pytest_asyncio.fixture
async def duffel(standin: DuffelStandIn) -> AsyncIterator[DuffelProvider]:
    provider = DuffelProvider(
        TOKEN, base_url=standin.base_url, timeout=2.0, backoff=0.01, max_backoff=0.05
    )
    yield provider
    await provider.close()


def query(
    places: PlaceIndex,
    origin: str = "LIS",
    destination: str = "FRA",
    *,
    return_date: date | None = None,
    passengers: Passengers | None = None,
) -> SearchQuery:
    def where(text: str) -> Location:
        result = places.resolve(text)
        return result.location or result.choices[0]

    return SearchQuery(
        origin=where(origin),
        destination=where(destination),
        departure=DEPARTURE,
        return_date=return_date,
        passengers=passengers or Passengers(),
    )


def traveller(
    category: PassengerCategory = PassengerCategory.ADULT, **changes: object
) -> Traveller:
    values: dict[str, object] = {
        "category": category,
        "first_name": "Ana",
        "last_name": "Silva",
        "birth_date": date(1990, 1, 2),
        "gender": Gender.FEMALE,
        "nationality": "PT",
        "passport_number": "P1234567",
        "passport_expiry": date(2034, 1, 1),
        "email": "ana@example.com",
        "phone": "+351 912 345 678",
    }
    values.update(changes)
    return Traveller.model_validate(values)


def booking(itinerary: Itinerary, *travellers: Traveller, **changes: object) -> Booking:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "id": "b-1",
        "reference": "D7MP3Q",
        "user_id": 1,
        "itinerary": itinerary,
        "travellers": travellers or (traveller(),),
        "amount": itinerary.price,
        "created_at": now,
        "updated_at": now,
    }
    values.update(changes)
    return Booking.model_validate(values)


async def refundable_offer(duffel: DuffelProvider, places: PlaceIndex) -> Itinerary:
    found = await duffel.search(query(places))
    return next(i for i in found if i.conditions and i.conditions.refundable)


# mapping ----------------------------------------------------------------------------------------
async def test_offers_become_itineraries_with_local_times_bags_and_conditions(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    found = await duffel.search(query(places, return_date=DEPARTURE + timedelta(days=7)))
    assert len(found) == 3
    cheapest = found[0]
    assert cheapest.provider == "duffel"
    assert cheapest.booking_token
    assert cheapest.booking_token.startswith("off_")
    outbound, inbound = cheapest.outbound[0], cheapest.inbound[0]
    assert (outbound.origin, outbound.destination) == ("LIS", "FRA")
    assert (inbound.origin, inbound.destination) == ("FRA", "LIS")
    assert outbound.flight_number.startswith("ZZ")
    # Duffel's wall-clock time, in the airport's own zone.
    assert str(outbound.departure.tzinfo) == "Europe/Lisbon"
    assert (outbound.departure.hour, outbound.departure.minute) == (7, 0)
    assert str(outbound.arrival.tzinfo) == "Europe/Berlin"
    assert cheapest.baggage is not None
    assert cheapest.baggage.hand_pieces == 1
    assert cheapest.baggage.hold_pieces == 0
    assert cheapest.conditions is not None
    assert cheapest.conditions.refundable is False
    flex = found[-1]
    assert flex.conditions is not None
    assert flex.conditions.refundable is True
    assert flex.conditions.change_penalty is not None
    assert cheapest.holdable is True
    assert cheapest.fare_expires_at is not None
    assert cheapest.fare_expires_at > datetime.now(UTC)


async def test_the_search_asks_for_passengers_by_type_and_age_and_the_cabin(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    found = await duffel.search(
        query(places, passengers=Passengers(adults=2, children=1, infants=1))
    )
    offer = standin.offers[found[0].booking_token or ""]
    kinds = [(p["type"], p["age"]) for p in offer["passengers"]]
    assert kinds == [("adult", None), ("adult", None), (None, 8), (None, 1)]


# re-check ---------------------------------------------------------------------------------------
async def test_a_recheck_reads_the_live_price_and_expiry(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    offer = (await duffel.search(query(places)))[0]
    standin.change_offer_price(offer.booking_token or "", "999.00")
    checked = await duffel.recheck(offer, Passengers())
    assert checked.available
    assert checked.price.format() == "€999.00"
    assert checked.expires_at == offer.fare_expires_at


async def test_an_expired_or_sold_out_offer_is_unavailable(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    first, second, _ = await duffel.search(query(places))
    standin.expire_offer(first.booking_token or "")
    standin.sell_out(second.booking_token or "")
    assert not (await duffel.recheck(first, Passengers())).available
    assert not (await duffel.recheck(second, Passengers())).available


async def test_a_rate_limit_is_waited_out_by_its_reset_header(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    standin.fail_with = [429]
    found = await duffel.search(query(places))
    assert found
    assert standin.requests["POST /air/offer_requests"] == 2


async def test_a_lasting_outage_is_reported_as_unavailable(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    standin.fail_with = [503, 503, 503]
    with pytest.raises(ProviderUnavailableError):
        await duffel.search(query(places))


async def test_a_wrong_token_says_which_setting_to_check(
    standin: DuffelStandIn, places: PlaceIndex
) -> None:
    provider = DuffelProvider("duffel_test_wrong", base_url=standin.base_url)
    try:
        with pytest.raises(ProviderError, match="DUFFEL_ACCESS_TOKEN"):
            await provider.search(query(places))
    finally:
        await provider.close()


# order life cycle -------------------------------------------------------------------------------
async def test_hold_then_pay_from_balance_gives_the_airline_reference_and_tickets(
    duffel: DuffelProvider,
    standin: DuffelStandIn,
    places: PlaceIndex,
    caplog: pytest.LogCaptureFixture,
) -> None:
    offer = (await duffel.search(query(places)))[0]
    with caplog.at_level(logging.DEBUG):
        held = await duffel.hold(booking(offer))
    assert held is not None
    order = standin.orders[held.order_id]
    assert order["type"] == "hold"
    assert order["payment_status"]["awaiting_payment"]
    assert held.payment_required_by is not None
    assert held.airline_reference
    sent = standin.order_bodies[0]["passengers"][0]
    assert sent["phone_number"] == "+351912345678"  # E.164
    assert sent["title"] == "ms"
    assert sent["gender"] == "f"
    assert sent["identity_documents"][0]["unique_identifier"] == "P1234567"
    ticket = await duffel.ticket(booking(offer, provider_order_id=held.order_id))
    assert ticket.airline_reference == order["booking_reference"]
    assert len(ticket.ticket_numbers) == 1
    assert len(ticket.ticket_numbers[0]) == 13
    assert standin.payments[0]["amount"] == offer.price.major.to_eng_string()
    # A fulfilment run again finds the order paid and pays nothing twice.
    again = await duffel.ticket(booking(offer, provider_order_id=held.order_id))
    assert again.ticket_numbers == ticket.ticket_numbers
    assert len(standin.payments) == 1
    assert "P1234567" not in caplog.text
    assert "ana@example.com" not in caplog.text


async def test_a_price_rise_between_hold_and_pay_is_not_paid(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    offer = (await duffel.search(query(places)))[0]
    held = await duffel.hold(booking(offer))
    assert held is not None
    standin.change_order_price(held.order_id, "999.00")
    with pytest.raises(FareIncreasedError) as raised:
        await duffel.ticket(booking(offer, provider_order_id=held.order_id))
    assert raised.value.total.format() == "€999.00"
    assert standin.payments == []


async def test_a_sold_out_offer_cannot_be_held(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    offer = (await duffel.search(query(places)))[0]
    standin.sell_out(offer.booking_token or "")
    with pytest.raises(FareUnavailableError):
        await duffel.hold(booking(offer))


async def test_an_offer_that_cannot_be_held_is_bought_at_once_on_ticketing(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    standin.holdable = False
    offer = (await duffel.search(query(places)))[0]
    assert offer.holdable is False
    assert await duffel.hold(booking(offer)) is None
    ticket = await duffel.ticket(booking(offer))
    assert ticket.airline_reference
    assert ticket.ticket_numbers
    assert standin.only_order()["type"] == "instant"


async def test_the_airlines_validation_error_is_reported_with_its_field(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    offer = (await duffel.search(query(places)))[0]
    with pytest.raises(ProviderError, match="invalid_phone_number"):
        await duffel.hold(booking(offer, traveller(phone=None)))


async def test_a_refundable_fare_is_cancelled_for_what_the_airline_refunds(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    standin.refund_penalty = standin.refund_penalty + 30
    offer = await refundable_offer(duffel, places)
    held = await duffel.hold(booking(offer))
    assert held is not None
    paid = booking(offer, provider_order_id=held.order_id)
    await duffel.ticket(paid)
    quote = await duffel.quote_cancellation(paid)
    assert quote is not None
    assert quote.refund.amount == offer.price.amount - 3000
    assert standin.only_order()["cancelled_at"] is None  # a quote changes nothing
    refunded = await duffel.confirm_cancellation(paid, quote)
    assert refunded == quote.refund
    assert standin.only_order()["cancelled_at"] is not None


async def test_a_non_refundable_fare_quotes_nothing_back(
    duffel: DuffelProvider, standin: DuffelStandIn, places: PlaceIndex
) -> None:
    offer = (await duffel.search(query(places)))[0]
    held = await duffel.hold(booking(offer))
    assert held is not None
    paid = booking(offer, provider_order_id=held.order_id)
    await duffel.ticket(paid)
    quote = await duffel.quote_cancellation(paid)
    assert quote is not None
    assert not quote.refundable


# webhooks and helpers ---------------------------------------------------------------------------
def test_a_signature_is_checked_against_the_raw_body() -> None:
    body = b'{"id":"wev_1","type":"order.updated","data":{"object":{"id":"ord_1"}}}'
    header = sign("secret", body, 1_700_000_000)
    assert verify_signature("secret", body, header)
    assert not verify_signature("other", body, header)
    assert not verify_signature("secret", body + b" ", header)
    assert not verify_signature("secret", body, None)
    assert not verify_signature("secret", body, "v1=abc")
    assert not verify_signature("secret", body, header.replace("t=1700000000", "t=1700000001"))


def test_an_airline_cancellation_and_a_schedule_change_are_told_apart() -> None:
    cancelled = parse_event(
        b'{"id":"wev_1","type":"order.airline_initiated_change_detected",'
        b'"data":{"object":{"order_id":"ord_1","removed":[{}],"added":[]}}}'
    )
    assert cancelled is not None
    assert cancelled.kind == "airline_cancelled"
    changed = parse_event(
        b'{"id":"wev_2","type":"order.airline_initiated_change_detected",'
        b'"data":{"object":{"order_id":"ord_1","removed":[{}],"added":[{}]}}}'
    )
    assert changed is not None
    assert changed.kind == "schedule_changed"
    cancelled_order = parse_event(
        b'{"id":"wev_4","type":"order.updated",'
        b'"data":{"object":{"id":"ord_1","cancelled_at":"2026-12-02T10:00:00Z"}}}'
    )
    assert cancelled_order is not None
    assert cancelled_order.kind == "order_cancelled"  # maybe ours: never refunded by itself
    assert parse_event(b'{"id":"wev_3","type":"ping.triggered","data":{"object":{}}}') is None
    for bad in (b"[]", b"null", b"{", b'{"id":"x","type":"order.updated","data":{}}'):
        with pytest.raises(MalformedWebhookError):
            parse_event(bad)


def test_phone_numbers_are_sent_as_e164() -> None:
    assert e164("+44 20 7946 0958") == "+442079460958"
    assert e164("+1 (415) 555-2671") == "+14155552671"
    assert e164("12345") is None
    assert e164(None) is None
