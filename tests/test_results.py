"""Results as travellers browse them: sorting, the direct-only filter, paging, and the text."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.flights.format import (
    itinerary_detail,
    itinerary_line,
    no_results_text,
    price_basis,
    price_lines,
    results_header,
    rules_lines,
    short_price,
)
from services.flights.places import PlaceIndex
from services.flights.results import (
    PAGE_SIZE,
    SortKey,
    direct_only,
    paginate,
    results_page,
    sort_itineraries,
)
from services.models import (
    Baggage,
    Cabin,
    FareRules,
    Itinerary,
    Location,
    PassengerCategory,
    Passengers,
    PriceLine,
    SearchQuery,
    Segment,
)
from services.money import Money

LISBON = ZoneInfo("Europe/Lisbon")
BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
DAY = date(2027, 3, 12)
TODAY = date(2027, 1, 5)  # the same year: dates read "Fri 12 Mar"

# Telegram HTML: only these tags, and no bare '<', '>' or '&'.
_ALLOWED_TAG = re.compile(r"</?(b|i)>")


def assert_telegram_html(text: str) -> None:
    stripped = _ALLOWED_TAG.sub("", text)
    assert "<" not in stripped
    assert ">" not in stripped.replace("&gt;", "")
    assert re.search(r"&(?!lt;|gt;|amp;|quot;)", stripped) is None


def at(hour: int, minute: int, zone: ZoneInfo, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)


def seg(
    carrier: str,
    number: int,
    origin: str,
    destination: str,
    departure: datetime,
    arrival: datetime,
    *,
    inbound: bool = False,
) -> Segment:
    return Segment(
        carrier=carrier,
        flight_number=f"{carrier}{number}",
        origin=origin,
        destination=destination,
        departure=departure,
        arrival=arrival,
        inbound=inbound,
    )


def offer(
    ident: str, euros: int, *segments: Segment, provider: str = "demo", **extra: object
) -> Itinerary:
    return Itinerary(
        id=ident,
        provider=provider,
        segments=segments,
        price=Money(amount=euros * 100, currency="EUR"),
        **extra,
    )


# Three Lisbon-Frankfurt offers: cheap with a stop, fast and dear, early and middling.
CHEAP = offer(
    "cheap",
    89,
    seg("TP", 1, "LIS", "MAD", at(9, 0, LISBON), at(11, 15, BERLIN)),
    seg("IB", 2, "MAD", "FRA", at(13, 0, BERLIN), at(15, 35, BERLIN)),
)
FAST = offer("fast", 240, seg("LH", 1173, "LIS", "FRA", at(10, 0, LISBON), at(13, 55, BERLIN)))
EARLY = offer("early", 150, seg("TP", 572, "LIS", "FRA", at(6, 10, LISBON), at(10, 15, BERLIN)))
ALL = [FAST, CHEAP, EARLY]


@pytest.mark.parametrize(
    ("key", "order"),
    [
        (SortKey.PRICE, ["cheap", "early", "fast"]),
        (SortKey.DURATION, ["fast", "early", "cheap"]),
        (SortKey.DEPARTURE, ["early", "cheap", "fast"]),
    ],
)
def test_sorting(key: SortKey, order: list[str]) -> None:
    assert [i.id for i in sort_itineraries(ALL, key)] == order


def test_departure_sorting_compares_instants_not_wall_clocks() -> None:
    # 08:00 in Tokyo is the evening before in Lisbon: it leaves first.
    tokyo = offer("tokyo", 500, seg("NH", 1, "NRT", "LIS", at(8, 0, TOKYO), at(20, 0, LISBON)))
    lisbon = offer("lisbon", 500, seg("TP", 1, "LIS", "FRA", at(6, 0, LISBON), at(9, 0, BERLIN)))
    assert [i.id for i in sort_itineraries([lisbon, tokyo], SortKey.DEPARTURE)] == [
        "tokyo",
        "lisbon",
    ]


def test_sort_names_are_stable_and_unknown_ones_fall_back_to_price() -> None:
    assert SortKey.parse("duration") is SortKey.DURATION
    assert SortKey.parse("bogus") is SortKey.PRICE
    assert SortKey.parse(None) is SortKey.PRICE
    assert [k.label for k in SortKey] == ["Cheapest", "Fastest", "Earliest"]


def test_direct_only_keeps_non_stop_flights() -> None:
    assert [i.id for i in direct_only(ALL)] == ["fast", "early"]


def _many(count: int) -> list[Itinerary]:
    return [
        offer(f"o{n}", 100 + n, seg("TP", n + 1, "LIS", "FRA", at(6, n % 60, LISBON), at(10, 0, BERLIN)))
        for n in range(count)
    ]  # fmt: skip


def test_paging_in_fives() -> None:
    items = _many(12)
    first = paginate(items, 0)
    assert PAGE_SIZE == 5
    assert [i.id for i in first.items] == ["o0", "o1", "o2", "o3", "o4"]
    assert (first.number, first.pages, first.total, first.start) == (0, 3, 12, 0)
    assert not first.has_previous
    assert first.has_next
    last = paginate(items, 2)
    assert [i.id for i in last.items] == ["o10", "o11"]
    assert last.start == 10
    assert last.has_previous
    assert not last.has_next


@pytest.mark.parametrize(("asked", "shown"), [(-1, 0), (99, 2)])
def test_an_old_button_cannot_page_out_of_range(asked: int, shown: int) -> None:
    assert paginate(_many(12), asked).number == shown


def test_no_results_is_one_empty_page() -> None:
    page = paginate([], 0)
    assert (page.items, page.pages, page.total) == ((), 1, 0)


def test_results_page_sorts_filters_and_pages() -> None:
    page = results_page(ALL, sort=SortKey.DURATION, direct=True)
    assert [i.id for i in page.items] == ["fast", "early"]
    assert page.total == 2


# text -------------------------------------------------------------------------------------------
def test_a_result_line_reads_like_a_flight() -> None:
    line = itinerary_line(CHEAP, number=1)
    assert line.startswith("<b>1. €89</b> · TAP Air Portugal + Iberia")
    assert "09:00 LIS → 15:35 FRA · 5h 35m · 1 stop (MAD)" in line
    assert_telegram_html(line)
    assert "direct" in itinerary_line(FAST)
    assert "10:00 LIS → 13:55 FRA · 2h 55m · direct" in itinerary_line(FAST)  # zones differ


def test_a_next_day_arrival_says_plus_one() -> None:
    overnight = offer(
        "night", 700,
        seg("NH", 232, "FRA", "HND", at(21, 40, BERLIN), at(17, 5, TOKYO, DAY + timedelta(days=1))),
    )  # fmt: skip
    assert "21:40 FRA → 17:05 HND +1 · 11h 25m · direct" in itinerary_line(overnight)


def test_a_return_trip_shows_both_directions() -> None:
    trip = offer(
        "return",
        180,
        seg("TP", 572, "LIS", "FRA", at(6, 10, LISBON), at(10, 15, BERLIN)),
        seg("TP", 573, "FRA", "LIS", at(11, 5, BERLIN, date(2027, 3, 20)),
            at(13, 10, LISBON, date(2027, 3, 20)), inbound=True),
    )  # fmt: skip
    lines = itinerary_line(trip).splitlines()
    assert len(lines) == 3
    assert lines[2].strip() == "↩ 11:05 FRA → 13:10 LIS · 3h 05m · direct"


def test_provider_text_is_escaped() -> None:
    odd = offer("odd", 50, seg("<i>", 1, "LIS", "FRA", at(6, 0, LISBON), at(10, 0, BERLIN)))
    line = itinerary_line(odd)
    assert "&lt;I&gt;" in line
    assert_telegram_html(line)
    assert_telegram_html(itinerary_detail(odd, places=PlaceIndex.default(), today=TODAY))


def test_the_detail_shows_every_segment_layovers_baggage_and_total() -> None:
    detailed = CHEAP.model_copy(
        update={
            "baggage": Baggage(hand_kg=8, hold_kg=23),
            "seats_left": 2,
        }
    )
    text = itinerary_detail(
        detailed, passengers=Passengers(adults=2), places=PlaceIndex.default(), today=TODAY
    )
    assert "<b>Lisbon → Frankfurt</b>" in text
    assert "<b>Outbound</b> · Fri 12 Mar" in text
    assert "✈ TP 1 · TAP Air Portugal" in text
    assert "✈ IB 2 · Iberia" in text
    assert "09:00 LIS Lisbon → 11:15 MAD Madrid · 1h 15m" in text
    assert "⏱ 1h 45m layover in Madrid (MAD)" in text
    assert "Cabin bag 8 kg · checked bag 23 kg" in text
    assert "Only 2 seats left at this price" in text
    assert "<b>Total €89.00</b> for 2 adults" in text
    assert "Demo fare" in text
    assert_telegram_html(text)


def test_the_detail_warns_about_an_airport_change_and_paid_bags() -> None:
    london = offer(
        "change", 120,
        seg("U2", 1, "LIS", "LGW", at(7, 0, LISBON), at(9, 40, LISBON)),
        seg("BA", 2, "LHR", "FRA", at(13, 0, LISBON), at(15, 45, BERLIN)),
        provider="kiwi",
        baggage=Baggage(hand_kg=10, first_hold_bag=Money(amount=3495, currency="EUR")),
    )  # fmt: skip
    text = itinerary_detail(london, places=PlaceIndex.default(), today=TODAY)
    assert "change airport LGW → LHR" in text
    assert "checked bag from €34.95" in text
    assert "Demo fare" not in text


def test_the_header_names_route_date_travellers_and_demo_label() -> None:
    places = PlaceIndex.default()
    tokyo = places.resolve("tokyo").choices[0]
    lisbon = places.resolve("lisbon").location
    assert isinstance(lisbon, Location)
    # Built without validation: the text does not depend on the real date.
    query = SearchQuery.model_construct(
        origin=lisbon,
        destination=tokyo,
        departure=date(2027, 3, 12),
        return_date=None,
        passengers=Passengers(),
        cabin=Cabin.ECONOMY,
        currency="EUR",
    )
    header = results_header(query, demo=True, today=TODAY)
    assert re.sub("<[^>]+>", "", header) == "LIS → TYO, Fri 12 Mar, 1 adult · demo fares"
    assert_telegram_html(header)
    back = query.model_copy(
        update={"return_date": date(2027, 3, 21), "cabin": Cabin.BUSINESS,
                "passengers": Passengers(adults=2, children=1)}
    )  # fmt: skip
    text = re.sub("<[^>]+>", "", results_header(back, demo=False, count=7, today=TODAY))
    assert text == "LIS ⇄ TYO, Fri 12 Mar – Sun 21 Mar, 2 adults, 1 child · Business · 7 flights"
    assert "No flights found Lisbon → Tokyo on Fri 12 Mar" in no_results_text(query, today=TODAY)


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(amount=8900, currency="EUR"), "€89"),
        (Money(amount=8950, currency="EUR"), "€89.50"),
        (Money(amount=123400, currency="GBP"), "£1,234"),
        (Money(amount=12000, currency="JPY"), "¥12,000"),
        (Money(amount=5000, currency="CHF"), "CHF 50"),
    ],
)
def test_short_prices(money: Money, text: str) -> None:
    assert short_price(money) == text


def test_seats_left_are_counted_against_the_party() -> None:
    one_left = CHEAP.model_copy(update={"seats_left": 1})
    alone = itinerary_detail(one_left, passengers=Passengers(), today=TODAY)
    assert "Only 1 seat left at this price" in alone
    party = itinerary_detail(one_left, passengers=Passengers(adults=3), today=TODAY)
    assert "Only 1 seat" not in party
    # infants sit on a lap: two adults and an infant need two seats
    two_left = CHEAP.model_copy(update={"seats_left": 2})
    family = itinerary_detail(two_left, passengers=Passengers(adults=2, infants=1), today=TODAY)
    assert "Only 2 seats left at this price" in family


def _eur(euros: int) -> Money:
    return Money(amount=euros * 100, currency="EUR")


def test_the_price_is_split_per_category_with_the_taxes_when_the_provider_gives_them() -> None:
    family = CHEAP.model_copy(
        update={
            "price": _eur(475),
            "price_lines": (
                PriceLine(category=PassengerCategory.ADULT, count=2, each=_eur(200)),
                PriceLine(category=PassengerCategory.CHILD, count=1, each=_eur(75)),
            ),
            "taxes": _eur(95),
        }
    )
    text = "\n".join(price_lines(family, Passengers(adults=2, children=1)))
    assert "Adult × 2: €200.00 each = €400.00" in text
    assert "Child: €75.00" in text
    assert "Taxes and fees, included: €95.00" in text
    assert "<b>Total €475.00</b> for 2 adults, 1 child" in text
    plain = price_lines(CHEAP, Passengers())
    assert plain == ["<b>Total €89.00</b> for 1 adult"]  # nothing invented


def test_fare_rules_say_what_the_fare_allows_and_what_it_does_not_say() -> None:
    ruled = CHEAP.model_copy(
        update={
            "rules": FareRules(refundable=False, changeable=True, change_fee=_eur(45)),
            "baggage": Baggage(hand_kg=10),
        }
    )
    assert rules_lines(ruled) == [
        "Changes: allowed, fee €45.00 per traveller",
        "Refund: not refundable",
        "🧳 Cabin bag 10 kg",
    ]
    assert rules_lines(CHEAP) == [
        "Changes: ask the airline (the fare does not say)",
        "Refund: ask the airline (the fare does not say)",
        "🧳 Bags: as the airline's fare includes (not stated)",
    ]


def test_results_say_whether_a_price_is_per_person_or_the_total() -> None:
    assert "per person" in price_basis(Passengers())
    assert "total for 2 adults, 1 infant" in price_basis(Passengers(adults=2, infants=1))
