"""Demo fares: deterministic, plausible, in each airport's own time zone, and labelled demo."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from services.flights.base import ProviderError
from services.flights.demo import DemoProvider, block_minutes
from services.flights.places import GLOBAL_HUBS, PlaceIndex, airport_distance_km
from services.models import (
    Booking,
    Cabin,
    Gender,
    Itinerary,
    Location,
    PassengerCategory,
    Passengers,
    SearchQuery,
    Traveller,
    today_anywhere,
)
from services.money import Money
from tests.support.days import next_winter_day

TODAY = today_anywhere()
DEPARTURE = next_winter_day(TODAY)
RETURN = DEPARTURE + timedelta(days=8)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def places() -> PlaceIndex:
    return PlaceIndex.default()


@pytest.fixture
def provider(places: PlaceIndex) -> DemoProvider:
    return DemoProvider(places=places, today=lambda: TODAY)


def place(places: PlaceIndex, text: str) -> Location:
    result = places.resolve(text)
    found = result.location or result.choices[0]
    assert found is not None
    return found


def query(
    places: PlaceIndex,
    origin: str,
    destination: str,
    *,
    departure: date = DEPARTURE,
    return_date: date | None = None,
    passengers: Passengers | None = None,
    cabin: Cabin = Cabin.ECONOMY,
    currency: str = "EUR",
) -> SearchQuery:
    return SearchQuery(
        origin=place(places, origin),
        destination=place(places, destination),
        departure=departure,
        return_date=return_date,
        passengers=passengers or Passengers(),
        cabin=cabin,
        currency=currency,
    )


def _digest(itineraries: list[Itinerary]) -> str:
    return json.dumps([i.model_dump(mode="json") for i in itineraries], sort_keys=True)


async def test_the_same_query_gives_the_same_results(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    q = query(places, "LIS", "tokyo")
    first = await provider.search(q)
    second = await DemoProvider(places=places, today=lambda: TODAY).search(q)
    assert first == second
    next_day = DEPARTURE + timedelta(days=1)
    other_day = await provider.search(q.model_copy(update={"departure": next_day}))
    assert _digest(other_day) != _digest(first)


async def test_the_same_query_gives_the_same_results_in_another_process(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    script = (
        "import asyncio, json, sys\n"
        "from datetime import date\n"
        "from services.flights.demo import DemoProvider\n"
        "from services.models import SearchQuery\n"
        "q = SearchQuery.model_validate_json(sys.argv[1])\n"
        "today = date.fromisoformat(sys.argv[2])\n"
        "found = asyncio.run(DemoProvider(today=lambda: today).search(q))\n"
        "print(json.dumps([i.model_dump(mode='json') for i in found], sort_keys=True))\n"
    )
    q = query(places, "berlin", "rome", return_date=RETURN)
    here = _digest(await provider.search(q))

    def run(hash_seed: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, q.model_dump_json(), TODAY.isoformat()],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    # Different hash seeds: nothing may depend on hash().
    outputs = await asyncio.gather(*(asyncio.to_thread(run, seed) for seed in ("1", "2")))
    assert outputs == [here, here]


async def test_lisbon_tokyo_departs_in_lisbon_time_and_arrives_in_tokyo_time(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    found = await provider.search(query(places, "LIS", "NRT"))
    assert 5 <= len(found) <= 15
    for itinerary in found:
        first, last = itinerary.outbound[0], itinerary.outbound[-1]
        assert first.origin == "LIS"
        assert last.destination == "NRT"
        assert str(first.departure.tzinfo) == "Europe/Lisbon"
        assert first.departure.utcoffset() == timedelta(0)  # Lisbon in winter
        assert str(last.arrival.tzinfo) == "Asia/Tokyo"
        assert last.arrival.utcoffset() == timedelta(hours=9)
        assert first.departure.date() == DEPARTURE  # the day asked for, in Lisbon
        for segment in itinerary.segments:
            origin, destination = places.get(segment.origin), places.get(segment.destination)
            assert str(segment.departure.tzinfo) == origin.tz
            assert str(segment.arrival.tzinfo) == destination.tz
            # Durations are the same whichever zone they are read in.
            utc_minutes = (
                segment.arrival.astimezone(UTC) - segment.departure.astimezone(UTC)
            ).total_seconds() / 60
            assert utc_minutes == block_minutes(origin, destination)
            assert segment.duration == timedelta(minutes=utc_minutes)
        for before, after in zip(itinerary.segments, itinerary.segments[1:], strict=False):
            if before.inbound == after.inbound:
                layover = after.departure - before.arrival
                assert timedelta(minutes=50) <= layover <= timedelta(hours=12)
        # 11,000 km with a connection: longer than the non-stop flight time, shorter than a day
        assert timedelta(hours=14) <= itinerary.outbound_duration <= timedelta(hours=26)


async def test_long_routes_connect_through_real_hubs_on_the_way(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    found = await provider.search(query(places, "LIS", "NRT"))
    assert all(i.stops >= 1 for i in found)  # nobody flies Lisbon-Tokyo non-stop
    lisbon, narita = places.get("LIS"), places.get("NRT")
    direct = airport_distance_km(lisbon, narita)
    for itinerary in found:
        for segment in itinerary.outbound[:-1]:
            hub = places.get(segment.destination)
            assert hub.iata in GLOBAL_HUBS
            detour = airport_distance_km(lisbon, hub) + airport_distance_km(hub, narita)
            assert detour <= 1.3 * direct


async def test_short_routes_have_direct_flights_with_plausible_times_and_airlines(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    found = await provider.search(query(places, "LIS", "MAD"))
    direct = [i for i in found if i.stops == 0]
    assert direct
    for itinerary in direct:
        assert timedelta(hours=1) <= itinerary.outbound_duration <= timedelta(hours=1, minutes=45)
        assert 6 <= itinerary.departure.hour <= 22
    carriers = {c for i in found for c in i.carriers}
    european = {"TP", "IB", "UX", "VY", "FR", "U2", "W6", "AF", "LH", "KL", "BA", "LX", "SN"}
    assert carriers <= european


async def test_remote_airports_still_get_connections(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    found = await provider.search(query(places, "FAO", "KOJ"))  # Faro to Kagoshima
    assert found
    assert all(1 <= i.stops <= 2 for i in found)


async def test_any_two_passenger_airports_get_coherent_flights(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    codes = [a.iata for a in places.passenger_airports()]
    pick = random.Random(2027)
    checked = 0
    while checked < 60:
        origin, destination = pick.sample(codes, 2)
        if airport_distance_km(places.get(origin), places.get(destination)) < 150:
            continue
        checked += 1
        q = SearchQuery(
            origin=places.airport_location(origin),
            destination=places.airport_location(destination),
            departure=DEPARTURE,
            return_date=RETURN,
        )
        found = await provider.search(q)
        assert 1 <= len(found) <= 15, (origin, destination)
        for itinerary in found:
            assert itinerary.outbound[0].origin == origin
            assert itinerary.outbound[-1].destination == destination
            assert itinerary.inbound[0].origin == destination
            assert itinerary.inbound[-1].destination == origin
            assert itinerary.outbound[0].departure.date() == DEPARTURE
            for direction in (itinerary.outbound, itinerary.inbound):
                for before, after in itertools.pairwise(direction):
                    assert before.destination == after.origin
                    assert after.departure > before.arrival


async def test_a_city_searches_its_airports(places: PlaceIndex, provider: DemoProvider) -> None:
    found = await provider.search(query(places, "london", "paris"))
    origins = {i.outbound[0].origin for i in found}
    destinations = {i.outbound[-1].destination for i in found}
    assert origins <= {"LHR", "LGW", "STN", "LTN", "LCY", "SEN"}
    assert destinations <= {"CDG", "ORY", "BVA"}
    assert len(origins) > 1


async def test_prices_grow_with_distance_and_cabin(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    short = await provider.search(query(places, "LIS", "MAD"))
    far = await provider.search(query(places, "LIS", "NRT"))
    assert max(i.price.amount for i in short) < min(i.price.amount for i in far)
    business = await provider.search(query(places, "LIS", "NRT", cabin=Cabin.BUSINESS))
    assert min(i.price.amount for i in business) > 2 * min(i.price.amount for i in far)


async def test_prices_are_higher_close_to_departure(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    routes = [("LIS", "MAD"), ("BER", "FCO"), ("JFK", "LHR"), ("CDG", "AMS"), ("SIN", "HKG")]
    soon = later = 0
    for origin, destination in routes:
        near = await provider.search(
            query(places, origin, destination, departure=TODAY + timedelta(days=2))
        )
        far = await provider.search(
            query(places, origin, destination, departure=TODAY + timedelta(days=58))
        )
        soon += min(i.price.amount for i in near)
        later += min(i.price.amount for i in far)
    assert soon > 1.2 * later


async def test_price_is_the_total_for_every_traveller(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    alone = await provider.search(query(places, "LIS", "MAD"))
    family = await provider.search(
        query(places, "LIS", "MAD", passengers=Passengers(adults=2, children=1, infants=1))
    )

    # One flight number can leave twice a day with other connections: key by number and time.
    def flights(itinerary: Itinerary) -> tuple[tuple[str, datetime], ...]:
        return tuple((s.flight_number, s.departure) for s in itinerary.segments)

    by_flights = {flights(i): i.price.amount for i in alone}
    assert len(family) == len(alone)  # the same flights, whoever travels
    for itinerary in family:
        adult = by_flights[flights(itinerary)]
        rest = itinerary.price.amount - 2 * adult
        # a child pays about 75% of an adult's fare, an infant about 10%
        assert abs(rest - 0.85 * adult) <= 300  # within €3 of rounding each fare


async def test_prices_are_in_the_query_currency(places: PlaceIndex, provider: DemoProvider) -> None:
    euros = await provider.search(query(places, "LIS", "MAD"))
    yen = await provider.search(query(places, "LIS", "MAD", currency="JPY"))
    assert {i.price.currency for i in yen} == {"JPY"}
    assert yen[0].price.amount > 100 * euros[0].price.major
    with pytest.raises(ProviderError, match="not available in XOF"):
        await provider.search(query(places, "LIS", "MAD", currency="XOF"))


async def test_return_trips_have_inbound_segments_on_the_return_day(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    back = RETURN
    found = await provider.search(query(places, "LIS", "NRT", return_date=back))
    for itinerary in found:
        assert itinerary.inbound
        assert all(s.inbound for s in itinerary.inbound)
        assert itinerary.inbound[0].origin == "NRT"
        assert itinerary.inbound[-1].destination == "LIS"
        assert itinerary.inbound[0].departure.date() == back
        assert str(itinerary.inbound[0].departure.tzinfo) == "Asia/Tokyo"


async def test_every_result_is_labelled_demo(places: PlaceIndex, provider: DemoProvider) -> None:
    found = await provider.search(query(places, "LIS", "NRT"))
    assert all(i.provider == "demo" and i.is_demo for i in found)
    assert all(i.booking_token for i in found)


async def test_dates_beyond_the_horizon_are_refused(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    with pytest.raises(ProviderError, match="available up to"):
        await provider.search(query(places, "LIS", "MAD", departure=TODAY + timedelta(days=331)))


def _booking(itinerary: Itinerary) -> Booking:
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    traveller = Traveller(
        category=PassengerCategory.ADULT,
        first_name="Ana",
        last_name="Silva",
        birth_date=date(1990, 1, 2),
        gender=Gender.FEMALE,
        nationality="PT",
        passport_number="P1234567",
        passport_expiry=date(2030, 1, 1),
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


async def test_recheck_confirms_the_price_and_ticketing_is_instant(
    places: PlaceIndex, provider: DemoProvider
) -> None:
    itinerary = (await provider.search(query(places, "LIS", "MAD")))[0]
    checked = await provider.recheck(itinerary, Passengers())
    assert checked.available
    assert checked.price == itinerary.price
    ticket = await provider.ticket(_booking(itinerary))
    assert ticket.provider_booking_id.startswith("DEMO-")
    assert not ticket.needs_manual_action


async def test_a_price_change_or_sell_out_can_be_configured(places: PlaceIndex) -> None:
    plain = DemoProvider(places=places, today=lambda: TODAY)
    first, second = (await plain.search(query(places, "LIS", "MAD")))[:2]
    higher = first.price + Money(amount=2500, currency="EUR")
    provider = DemoProvider(
        places=places,
        today=lambda: TODAY,
        price_changes={first.id: higher},
        sold_out=[second.id],
    )
    changed = await provider.recheck(first, Passengers())
    assert changed.available
    assert changed.price == higher
    gone = await provider.recheck(second, Passengers())
    assert not gone.available


async def test_latency_option_and_call_count(places: PlaceIndex) -> None:
    provider = DemoProvider(places=places, today=lambda: TODAY, latency=0.05)
    started = datetime.now(UTC)
    await provider.search(query(places, "LIS", "MAD"))
    assert datetime.now(UTC) - started >= timedelta(milliseconds=50)
    assert provider.search_calls == 1


async def test_demo_fares_split_per_traveller_with_taxes_and_rules(places: PlaceIndex) -> None:
    family = SearchQuery(
        origin=places.airport_location("LIS"),
        destination=places.airport_location("FCO"),
        departure=TODAY + timedelta(days=45),
        passengers=Passengers(adults=2, children=1, infants=1),
    )
    found = await DemoProvider(places=places, today=lambda: TODAY).search(family)
    for itinerary in found:
        lines = itinerary.price_lines
        assert [(line.category.value, line.count) for line in lines] == [
            ("adult", 2),
            ("child", 1),
            ("infant", 1),
        ]
        total = lines[0].total + lines[1].total + lines[2].total
        assert total == itinerary.price
        assert itinerary.taxes is not None
        assert 0 < itinerary.taxes.amount < itinerary.price.amount
        assert itinerary.rules is not None
        assert itinerary.rules.refundable is not None


async def test_calendar_prices_follow_the_day_the_party_and_the_currency(
    places: PlaceIndex,
) -> None:
    """The calendar remembers each day's cheapest fare, so one traveller's month costs the
    next nothing; what it shows must still be that day's search, for whoever asks, whenever."""
    today = [TODAY]
    provider = DemoProvider(places=places, today=lambda: today[0])
    days = [TODAY + timedelta(days=n) for n in (8, 9, 10)]
    base = SearchQuery(
        origin=places.airport_location("LIS"),
        destination=places.airport_location("FCO"),
        departure=days[0],
    )

    async def cheapest_searched(asked: SearchQuery, day: date) -> Money:
        found = await provider.search(asked.model_copy(update={"departure": day}))
        return min((i.price for i in found), key=lambda price: price.amount)

    asked_before = [
        base,
        base.model_copy(update={"passengers": Passengers(adults=2, children=1)}),
        base.model_copy(update={"currency": "GBP"}),
    ]
    before = [await provider.cheapest_by_day(asked, days) for asked in asked_before]
    for asked, prices in zip(asked_before, before, strict=True):
        assert prices == {day: await cheapest_searched(asked, day) for day in days}
    assert before[0] != before[1]
    assert {price.currency for price in before[2].values()} == {"GBP"}

    today[0] = TODAY + timedelta(days=4)  # the fares of days 8-10 are now bought late
    after = await provider.cheapest_by_day(base, days)
    assert after == {day: await cheapest_searched(base, day) for day in days}
    assert after != before[0]
