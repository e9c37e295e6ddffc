"""The Kiwi adapter against a local Tequila stand-in: mapping, and every way it can fail."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
import pytest_asyncio

from services.flights.base import (
    FareChangedError,
    FareUnavailableError,
    ProviderError,
    ProviderUnavailableError,
    TicketingError,
)
from services.flights.breaker import BreakerState
from services.flights.contacts import e164
from services.flights.kiwi import KiwiProvider
from services.flights.places import PlaceIndex
from services.models import (
    Booking,
    Gender,
    Itinerary,
    Location,
    LocationKind,
    PassengerCategory,
    Passengers,
    SearchQuery,
    Traveller,
    today_anywhere,
)
from services.money import Money
from tests.standins.kiwi import API_KEY, KiwiStandIn
from tests.support.days import next_winter_day

DEPARTURE = next_winter_day(today_anywhere())
RETURN = DEPARTURE + timedelta(days=8)
SEARCH = "/v2/search"


@pytest.fixture(scope="module")
def places() -> PlaceIndex:
    return PlaceIndex.default()


@pytest_asyncio.fixture
async def tequila() -> AsyncIterator[KiwiStandIn]:
    standin = KiwiStandIn()
    await standin.start()
    yield standin
    await standin.close()


def make_provider(tequila: KiwiStandIn, places: PlaceIndex, **options: object) -> KiwiProvider:
    settings: dict[str, object] = {
        "base_url": tequila.base_url,
        "places": places,
        "timeout": 0.5,
        "backoff": 0.01,
        "max_backoff": 0.05,
        "poll_interval": 0.01,
    }
    settings.update(options)
    return KiwiProvider(API_KEY, **settings)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def kiwi(tequila: KiwiStandIn, places: PlaceIndex) -> AsyncIterator[KiwiProvider]:
    provider = make_provider(tequila, places)
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


def state_of(provider: KiwiProvider) -> BreakerState:
    return provider.breaker.state


# mapping ----------------------------------------------------------------------------------------
async def test_results_are_mapped_to_itineraries(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    found = await kiwi.search(query(places))
    assert len(found) == 3
    assert tequila.rejected_keys == 0  # every request carried the apikey header
    direct = next(i for i in found if i.stops == 0)
    assert direct.provider == "kiwi"
    segment = direct.segments[0]
    assert (segment.origin, segment.destination) == ("LIS", "FRA")
    assert segment.carrier == "TP"
    assert segment.flight_number.startswith("TP")
    assert not segment.inbound
    # 07:30 in Lisbon (the stand-in's local time), shown in Lisbon's zone; arrival in Frankfurt's.
    assert str(segment.departure.tzinfo) == "Europe/Lisbon"
    assert (segment.departure.hour, segment.departure.minute) == (7, 30)
    assert str(segment.arrival.tzinfo) == "Europe/Berlin"
    assert segment.arrival.utcoffset() == timedelta(hours=1)
    assert direct.booking_token
    assert direct.seats_left == 4
    assert direct.baggage is not None
    assert direct.baggage.hand_kg == 10
    assert direct.baggage.hold_kg == 20
    assert direct.baggage.first_hold_bag == Money(amount=3495, currency="EUR")
    assert direct.deep_link is not None
    assert direct.deep_link.startswith("https://www.kiwi.com/")
    connecting = next(i for i in found if i.stops == 1)
    assert [(s.origin, s.destination) for s in connecting.outbound] == [
        ("LIS", "AMS"),
        ("AMS", "FRA"),
    ]
    assert connecting.seats_left is None  # Tequila's "seats": null


async def test_the_query_is_sent_in_tequilas_terms(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    await kiwi.search(
        query(
            places,
            "london",
            "LIS",
            return_date=RETURN,
            passengers=Passengers(adults=2, children=1, infants=1),
        )
    )
    sent = {k: v[0] for k, v in tequila.last_params[SEARCH].items()}
    assert sent["fly_from"].split(",")[:3] == ["LHR", "LGW", "STN"]
    assert sent["fly_to"] == "LIS"
    assert sent["date_from"] == sent["date_to"] == DEPARTURE.strftime("%d/%m/%Y")
    assert sent["return_from"] == sent["return_to"] == RETURN.strftime("%d/%m/%Y")
    assert (sent["adults"], sent["children"], sent["infants"]) == ("2", "1", "1")
    assert sent["selected_cabins"] == "M"
    assert sent["curr"] == "EUR"
    assert int(sent["limit"]) > 0


async def test_a_city_known_only_by_its_code_is_sent_as_city(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    faraway = Location(code="XYZ", name="Somewhere", kind=LocationKind.CITY, country="PT",
                       airports=("XYZ",))  # fmt: skip
    q = query(places).model_copy(update={"destination": faraway})
    await kiwi.search(q)
    assert tequila.last_params[SEARCH]["fly_to"] == ["city:XYZ"]


async def test_return_segments_are_marked_inbound(kiwi: KiwiProvider, places: PlaceIndex) -> None:
    found = await kiwi.search(query(places, return_date=RETURN))
    for itinerary in found:
        assert itinerary.inbound
        assert itinerary.inbound[0].origin == "FRA"
        assert itinerary.inbound[-1].destination == "LIS"
        assert itinerary.inbound[0].departure.date() == RETURN
        assert str(itinerary.inbound[0].departure.tzinfo) == "Europe/Berlin"


async def test_no_results_is_an_empty_list(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    tequila.empty = True
    assert await kiwi.search(query(places)) == []


async def test_malformed_items_are_skipped_and_logged(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex, caplog: pytest.LogCaptureFixture
) -> None:
    tequila.malformed = True
    with caplog.at_level(logging.WARNING, logger="services.flights.kiwi"):
        found = await kiwi.search(query(places))
    assert len(found) == 3  # the good ones survive
    skipped = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(skipped) == 5


# failures ---------------------------------------------------------------------------------------
async def test_a_bad_request_is_a_clear_error_without_retries(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    tequila.fail_with = [400]
    with pytest.raises(ProviderError) as caught:
        await kiwi.search(query(places))
    assert not isinstance(caught.value, ProviderUnavailableError)
    assert "HTTP 400" in str(caught.value)
    assert tequila.requests[SEARCH] == 1


async def test_a_refused_key_says_so(tequila: KiwiStandIn, places: PlaceIndex) -> None:
    tequila.api_key = "another-key"
    provider = make_provider(tequila, places)
    try:
        with pytest.raises(ProviderError, match="API key"):
            await provider.search(query(places))
    finally:
        await provider.close()
    assert tequila.requests[SEARCH] == 1
    assert tequila.rejected_keys == 1


async def test_server_errors_are_retried_then_succeed(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    tequila.fail_with = [500, 503]
    found = await kiwi.search(query(places))
    assert len(found) == 3
    assert tequila.requests[SEARCH] == 3


async def test_a_persistent_outage_is_an_honest_unavailable_error(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    tequila.fail_with = [500] * 10
    with pytest.raises(ProviderUnavailableError, match="try again in a minute"):
        await kiwi.search(query(places))
    assert tequila.requests[SEARCH] == 3  # the configured attempts, then give up


async def test_429_honours_a_short_retry_after(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    tequila.fail_with = [429]
    tequila.retry_after = 1
    started = time.monotonic()
    found = await kiwi.search(query(places))
    assert time.monotonic() - started >= 1.0
    assert found
    assert tequila.requests[SEARCH] == 2


async def test_429_with_a_long_retry_after_gives_up_at_once(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    tequila.fail_with = [429]
    tequila.retry_after = 120
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError) as caught:
        await kiwi.search(query(places))
    assert time.monotonic() - started < 0.5
    assert caught.value.retry_after == 120
    assert tequila.requests[SEARCH] == 1


async def test_a_slow_answer_times_out_without_hanging(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    tequila.delay = 1.0  # longer than the client's 0.5 s timeout
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError):
        await kiwi.search(query(places))
    assert time.monotonic() - started < 1.0  # one timeout, not one per retry
    assert tequila.requests[SEARCH] == 1


async def test_the_circuit_opens_then_recovers(tequila: KiwiStandIn, places: PlaceIndex) -> None:
    provider = make_provider(tequila, places, attempts=1, breaker_threshold=2, breaker_reset=0.3)
    try:
        tequila.fail_with = [500, 500]
        for _ in range(2):
            with pytest.raises(ProviderUnavailableError):
                await provider.search(query(places))
        assert state_of(provider) is BreakerState.OPEN
        # Open: the next search fails at once, without reaching Kiwi.
        started = time.monotonic()
        with pytest.raises(ProviderUnavailableError) as caught:
            await provider.search(query(places))
        # At once: well inside the client's 0.5 s timeout, and Kiwi was not asked.
        assert time.monotonic() - started < 0.25
        assert tequila.requests[SEARCH] == 2
        assert caught.value.retry_after is not None
        assert 0 < caught.value.retry_after <= 0.3
        # After the cool-down a trial goes through; Kiwi is healthy again, so it closes.
        await asyncio.sleep(0.35)
        found = await provider.search(query(places))
        assert found
        assert state_of(provider) is BreakerState.CLOSED
        assert tequila.requests[SEARCH] == 3
    finally:
        await provider.close()


async def test_a_failed_trial_reopens_the_circuit(tequila: KiwiStandIn, places: PlaceIndex) -> None:
    provider = make_provider(tequila, places, attempts=1, breaker_threshold=1, breaker_reset=0.2)
    try:
        tequila.fail_with = [500, 500]
        with pytest.raises(ProviderUnavailableError):
            await provider.search(query(places))
        await asyncio.sleep(0.25)
        assert state_of(provider) is BreakerState.HALF_OPEN
        with pytest.raises(ProviderUnavailableError):
            await provider.search(query(places))
        assert state_of(provider) is BreakerState.OPEN
        assert tequila.requests[SEARCH] == 2
    finally:
        await provider.close()


# locations --------------------------------------------------------------------------------------
async def test_locations_are_mapped_and_broken_entries_skipped(
    kiwi: KiwiProvider, tequila: KiwiStandIn
) -> None:
    found = await kiwi.locations("london")
    assert found[0].kind is LocationKind.CITY
    assert found[0].code == "LON"
    assert "LHR" in found[0].airports
    assert {loc.code for loc in found[1:]} >= {"LHR", "LGW"}
    assert all(loc.country == "GB" for loc in found)
    assert await kiwi.locations("x") == []
    assert tequila.requests["/locations/query"] == 1


# price check and ticketing ----------------------------------------------------------------------
async def _offer(kiwi: KiwiProvider, places: PlaceIndex) -> Itinerary:
    return (await kiwi.search(query(places)))[0]


async def test_recheck_confirms_the_price(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    offer = await _offer(kiwi, places)
    tequila.checks_before_ready = 2  # Kiwi is still checking on the first polls
    checked = await kiwi.recheck(offer, Passengers())
    assert checked.available
    assert checked.price == offer.price
    assert tequila.requests["/v2/booking/check_flights"] == 3
    assert "session_id" in tequila.last_params["/v2/booking/check_flights"]


async def test_recheck_reports_a_new_price(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    offer = await _offer(kiwi, places)
    tequila.check_mode = "price_change"
    checked = await kiwi.recheck(offer, Passengers())
    assert checked.available
    assert checked.price.amount > offer.price.amount


@pytest.mark.parametrize("mode", ["invalid", "expired"])
async def test_recheck_reports_flights_that_are_gone(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex, mode: str
) -> None:
    offer = await _offer(kiwi, places)
    tequila.check_mode = mode
    checked = await kiwi.recheck(offer, Passengers())
    assert not checked.available


def _booking(itinerary: Itinerary) -> Booking:
    now = datetime.now(UTC)
    traveller = Traveller(
        category=PassengerCategory.ADULT,
        first_name="Ana",
        last_name="Silva",
        birth_date=date(1990, 1, 2),
        gender=Gender.FEMALE,
        nationality="PT",
        passport_number="P1234567",
        passport_expiry=date(2030, 1, 1),
        email="ana@example.com",
        phone="+351900000000",
    )
    return Booking(
        id="b-1",
        reference="K7MP3Q",
        user_id=1,
        itinerary=itinerary,
        travellers=(traveller,),
        amount=itinerary.price,
        created_at=now,
        updated_at=now,
    )


async def test_ticketing_saves_and_confirms_the_booking(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex, caplog: pytest.LogCaptureFixture
) -> None:
    offer = await _offer(kiwi, places)
    with caplog.at_level(logging.DEBUG):
        ticket = await kiwi.ticket(_booking(offer))
    assert ticket.provider_booking_id == "4000001"
    assert not ticket.needs_manual_action
    saved = tequila.saved_bookings[0]
    assert saved["passengers"][0]["surname"] == "Silva"
    assert saved["passengers"][0]["category"] == "adult"
    assert saved["baggage"]  # free bags are declared too
    assert tequila.confirmed[0]["booking_id"] == 4000001
    assert "P1234567" not in caplog.text
    assert "ana@example.com" not in caplog.text


async def test_an_account_without_booking_access_asks_for_a_person(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    offer = await _offer(kiwi, places)
    tequila.save_status = 403
    ticket = await kiwi.ticket(_booking(offer))
    assert ticket.needs_manual_action
    assert tequila.confirmed == []


async def test_a_refused_payment_confirmation_fails_the_ticketing(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    offer = await _offer(kiwi, places)
    tequila.confirm_outcome = "declined"
    with pytest.raises(TicketingError, match="Insufficient deposit"):
        await kiwi.ticket(_booking(offer))


@pytest.mark.parametrize("outcome", ["error", "slow"])
async def test_a_payment_confirmation_without_a_clear_answer_asks_for_a_person(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex, outcome: str
) -> None:
    # Kiwi may have paid itself from our deposit and issued the ticket: no automatic refund.
    offer = await _offer(kiwi, places)
    tequila.confirm_outcome = outcome
    ticket = await kiwi.ticket(_booking(offer))
    assert ticket.needs_manual_action
    assert ticket.provider_booking_id == "4000001"
    assert len(tequila.confirmed) == 1


async def test_pay_saves_the_booking_and_payment_confirms_it(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    # Order before charge: save_booking when the traveller presses Pay, confirm_payment after
    # the money is taken.
    offer = await _offer(kiwi, places)
    held = await kiwi.hold(_booking(offer))
    assert held is not None
    assert held.order_id == "4000001"
    assert held.token
    assert tequila.confirmed == []
    paid = _booking(offer).model_copy(
        update={"provider_order_id": held.order_id, "provider_order_token": held.token}
    )
    ticket = await kiwi.ticket(paid)
    assert ticket.provider_booking_id == "4000001"
    assert len(tequila.saved_bookings) == 1  # not saved a second time
    assert tequila.confirmed == [{"booking_id": 4000001, "transaction_id": held.token}]


async def test_a_price_change_at_pay_is_refused_before_anything_is_saved(
    kiwi: KiwiProvider, tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    offer = await _offer(kiwi, places)
    tequila.check_mode = "price_change"
    with pytest.raises(FareChangedError):
        await kiwi.hold(_booking(offer))
    assert tequila.saved_bookings == []


async def test_save_booking_is_sent_as_tequila_documents_it_for_deposit_partners(
    tequila: KiwiStandIn, places: PlaceIndex
) -> None:
    provider = make_provider(tequila, places, deposit_email="deposit@agency.example")
    try:
        offer = await _offer(provider, places)
        await provider.hold(_booking(offer))
    finally:
        await provider.close()
    saved = tequila.saved_bookings[0]
    assert "payment_gateway" not in saved  # deposit partners pay from the deposit, not a card
    assert saved["health_declaration_checked"] is False  # nobody agreed to one
    assert (saved["lang"], saved["locale"]) == ("en", "en-US")
    lead = saved["passengers"][0]
    assert lead["title"] == "Ms"
    assert lead["email"] == "deposit@agency.example"
    assert lead["phone"] == "+351900000000"


def test_phone_numbers_go_to_kiwi_in_e164_or_not_at_all() -> None:
    assert e164("+351 900 000 000") == "+351900000000"
    assert e164("+1 202-555-0143") == "+12025550143"
    assert e164("+12") is None
    assert e164("not a phone") is None


async def test_a_saved_booking_older_than_kiwis_window_gets_no_new_link(
    kiwi: KiwiProvider, places: PlaceIndex
) -> None:
    offer = await _offer(kiwi, places)
    saved = _booking(offer).model_copy(update={"provider_order_id": "4000001"})
    assert await kiwi.check_hold(saved) is None  # just saved: still Kiwi's to confirm
    stale = saved.model_copy(update={"created_at": saved.created_at - timedelta(minutes=31)})
    with pytest.raises(FareUnavailableError):
        await kiwi.check_hold(stale)
