"""Demo fares: believable flights between any two real airports, the same every time.

Nothing here is a real schedule. The shapes are: block times from great-circle distance (cruise
speed plus taxi, a little faster eastbound), connections through real hubs that lie roughly on
the way, airlines that belong to the airports or the hub, local times in each airport's own
zone, and prices that move with distance, cabin, weekday and how far ahead the trip is. Every
number comes from a seed derived (with blake2b, not ``hash()``) from the query, so the same
query gives the same results in any process.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.flights.airlines import (
    COUNTRY_CARRIERS,
    HUB_CARRIERS,
    LOW_COST,
    REGIONAL_LOW_COST,
    codes,
    region_of,
)
from services.flights.base import (
    CancellationQuote,
    FareChangedError,
    FareIncreasedError,
    FareUnavailableError,
    FlightProvider,
    HeldOrder,
    OrderJournal,
    ProviderError,
    Recheck,
    Ticket,
)
from services.flights.dates import format_day
from services.flights.places import GLOBAL_HUBS, PlaceIndex, airport_distance_km
from services.models import (
    Airport,
    Baggage,
    Booking,
    Cabin,
    FareRules,
    Itinerary,
    PassengerCategory,
    Passengers,
    PriceLine,
    SearchQuery,
    Segment,
    today_anywhere,
    utcnow,
)
from services.money import Money, currency_exponent

DEMO = "demo"
_SEED_VERSION = "demo-v1"

# Hubs whose airlines fly the longest routes (beyond ~9,000 km) non-stop.
_ULTRA_LONG_HUBS = codes(
    """
    LHR CDG FRA AMS MUC IST DXB DOH AUH SIN HKG NRT HND ICN PEK PVG CAN TPE JFK EWR LAX SFO
    ORD DFW IAH ATL SEA YVR YYZ SYD MEL AKL JNB GRU SCL ADD DEL BOM
    """
)

# Slot-constrained hubs where low-cost airlines do not fly.
_NO_LOW_COST = codes("LHR CDG FRA MUC ZRH JFK HND NRT SIN DXB DOH HKG ICN")

_CALENDAR_DAYS_KEPT = 4096  # cheapest fares per day remembered: some 130 route-months

_CRUISE_KMH = 820.0
_TAXI_MINUTES = 38  # taxi out, climb, descent and taxi in beyond the cruise
_MIN_LAYOVER = 50
_MAX_LAYOVER = 270

# EUR -> currency, fixed: demo prices need to be stable, not current.
_EUR_RATES: dict[str, Decimal] = {
    "EUR": Decimal(1), "USD": Decimal("1.08"), "GBP": Decimal("0.85"), "CHF": Decimal("0.95"),
    "JPY": Decimal(160), "CAD": Decimal("1.47"), "AUD": Decimal("1.64"), "NZD": Decimal("1.79"),
    "SEK": Decimal("11.4"), "NOK": Decimal("11.6"), "DKK": Decimal("7.46"), "PLN": Decimal("4.3"),
    "CZK": Decimal("25.2"), "HUF": Decimal(395), "RON": Decimal("4.97"), "TRY": Decimal(36),
    "UAH": Decimal(45), "ILS": Decimal(4), "AED": Decimal("3.97"), "SAR": Decimal("4.05"),
    "QAR": Decimal("3.93"), "INR": Decimal(90), "CNY": Decimal("7.8"), "HKD": Decimal("8.4"),
    "SGD": Decimal("1.45"), "THB": Decimal(38), "KRW": Decimal(1450), "MYR": Decimal("4.9"),
    "IDR": Decimal(17000), "PHP": Decimal(61), "VND": Decimal(27000), "BRL": Decimal("5.9"),
    "MXN": Decimal(19), "ARS": Decimal(1050), "CLP": Decimal(1000), "COP": Decimal(4300),
    "ZAR": Decimal("19.8"), "EGP": Decimal(53), "MAD": Decimal("10.8"), "KES": Decimal(140),
    "NGN": Decimal(1650), "ISK": Decimal(150),
}  # fmt: skip

_CABIN_FACTOR = {
    Cabin.ECONOMY: 1.0,
    Cabin.PREMIUM_ECONOMY: 1.7,
    Cabin.BUSINESS: 3.6,
    Cabin.FIRST: 6.0,
}


def stable_seed(*parts: object) -> int:
    """A seed that is the same in every process and Python version (unlike ``hash()``)."""
    text = "|".join(str(p) for p in (_SEED_VERSION, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class _Leg:
    origin: Airport
    destination: Airport
    carrier: str

    @property
    def distance(self) -> float:
        return airport_distance_km(self.origin, self.destination)


class DemoProvider(FlightProvider):
    """Deterministic demo fares. Every itinerary has ``provider="demo"`` and says so.

    Test switches, fixed at construction: ``price_changes`` maps an itinerary id to the price a
    recheck reports, ``sold_out`` lists itinerary ids a recheck reports as gone,
    ``ticketing_prices`` maps an itinerary id to the final total ticketing finds (a fare that
    rose after payment). ``latency`` makes each search take that long, like a network call
    would.
    """

    name = DEMO
    horizon_days = 330

    def __init__(
        self,
        *,
        places: PlaceIndex | None = None,
        today: Callable[[], date] = today_anywhere,
        price_changes: Mapping[str, Money] | None = None,
        sold_out: Iterable[str] = (),
        latency: float = 0.0,
        ticketing_prices: Mapping[str, Money] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._places = places
        self._now = clock  # when a hold runs out: the instant the booking service reads
        self._ticketing_prices = dict(ticketing_prices or {})
        self.tickets_issued = 0  # ticket() calls that issued a ticket (for exactly-once checks)
        self._today = today
        self._price_changes = dict(price_changes or {})
        self._sold_out = frozenset(sold_out)
        self._latency = latency
        self.search_calls = 0  # how many searches reached the provider (for cache checks)
        # A day's cheapest fare depends only on the query and today. Generating a calendar
        # month is some 300 itineraries (80 ms of CPU here), which every traveller shown that
        # route's calendar would otherwise pay again.
        self._cheapest_on = lru_cache(maxsize=_CALENDAR_DAYS_KEPT)(self._generate_cheapest)

    @property
    def places(self) -> PlaceIndex:
        if self._places is None:
            self._places = PlaceIndex.default()
        return self._places

    # port ----------------------------------------------------------------------------------
    async def search(self, query: SearchQuery) -> list[Itinerary]:
        self.search_calls += 1
        if self._latency:
            await asyncio.sleep(self._latency)
        self._check(query)
        return _Generator(self, query).itineraries()

    async def cheapest_by_day(self, query: SearchQuery, days: Sequence[date]) -> dict[date, Money]:
        """Generated like a search (so the calendar matches the results), without the latency
        and without counting as a search."""
        today = self._today()
        last = today + timedelta(days=self.horizon_days)
        found: dict[date, Money] = {}
        for day in days:
            if day > last:
                continue
            cheapest = self._cheapest_on(query.model_copy(update={"departure": day}), today)
            if cheapest is not None:
                found[day] = cheapest
        return found

    def _generate_cheapest(self, query: SearchQuery, today: date) -> Money | None:
        """``today`` is part of the key only: the generator reads the same day itself."""
        fares = _Generator(self, query).itineraries()
        return min((f.price for f in fares), key=lambda price: price.amount) if fares else None

    async def recheck(self, itinerary: Itinerary, passengers: Passengers) -> Recheck:
        if itinerary.provider != DEMO:
            raise ProviderError("this offer is not a demo fare")
        if itinerary.id in self._sold_out:
            return Recheck(available=False, price=itinerary.price)
        changed = self._price_changes.get(itinerary.id)
        if changed is not None:
            return Recheck(available=True, price=changed, booking_token=itinerary.booking_token)
        return Recheck(available=True, price=itinerary.price, booking_token=itinerary.booking_token)

    async def ticket(
        self,
        booking: Booking,
        *,
        max_total: Money | None = None,
        journal: OrderJournal | None = None,
    ) -> Ticket:
        """Idempotent by construction: the ticket id is derived from the booking id, and a
        demo ticket costs nothing, so an attempt after a crash simply issues the same one."""
        if booking.itinerary.provider != DEMO:
            raise ProviderError("this booking is not for a demo fare")
        total = self._ticketing_prices.get(booking.itinerary.id, booking.amount)
        if max_total is not None and total > max_total:
            raise FareIncreasedError(total)
        self.tickets_issued += 1
        digest = hashlib.blake2b(f"ticket|{booking.id}".encode(), digest_size=5).hexdigest()
        numbers = tuple(
            f"999{stable_seed('eticket', booking.id, index) % 10**10:010d}"
            for index in range(len(booking.travellers))
        )
        return Ticket(
            provider_booking_id=booking.provider_order_id or f"DEMO-{digest.upper()}",
            airline_reference=_demo_pnr(booking.id),
            ticket_numbers=numbers,
            total=total,
        )

    # order life cycle, like a real provider's (hold, pay, cancel), so the console shows it ---
    async def hold(self, booking: Booking) -> HeldOrder | None:
        if booking.itinerary.provider != DEMO:
            return None  # not ours to hold; ticketing refuses it
        held = self._held_price(booking)
        digest = hashlib.blake2b(f"order|{booking.id}".encode(), digest_size=6).hexdigest()
        return HeldOrder(
            order_id=f"DEMO-ORD-{digest.upper()}",
            price=held,
            payment_required_by=self._now() + DEMO_HOLD,
            airline_reference=_demo_pnr(booking.id),
        )

    async def check_hold(self, booking: Booking) -> HeldOrder | None:
        if not booking.provider_order_id:
            return None
        price = self._held_price(booking)
        if price != booking.amount:
            raise FareChangedError(f"the demo fare now costs {price.format()}", price=price)
        return HeldOrder(
            order_id=booking.provider_order_id,
            price=price,
            payment_required_by=self._now() + DEMO_HOLD,
            airline_reference=_demo_pnr(booking.id),
        )

    def _held_price(self, booking: Booking) -> Money:
        if booking.itinerary.id in self._sold_out:
            raise FareUnavailableError("the demo fare sold out")
        return self._price_changes.get(booking.itinerary.id, booking.amount)

    async def quote_cancellation(self, booking: Booking) -> CancellationQuote | None:
        """Demo fares are fully refundable."""
        if not booking.provider_order_id:
            return None
        return CancellationQuote(
            quote_id=f"{booking.provider_order_id}-cancel", refund=booking.amount
        )

    async def confirm_cancellation(self, booking: Booking, quote: CancellationQuote) -> Money:
        return quote.refund

    # checks --------------------------------------------------------------------------------
    def _check(self, query: SearchQuery) -> None:
        if query.currency.upper() not in _EUR_RATES:
            raise ProviderError(f"Demo fares are not available in {query.currency}.")
        last = self._today() + timedelta(days=self.horizon_days)
        latest = query.return_date or query.departure
        if latest > last:
            raise ProviderError(
                f"Demo fares are available up to {format_day(last, today=self._today())}."
            )
        for code in (*query.origin.airports, *query.destination.airports):
            if self.places.find(code) is None:
                raise ProviderError(f"Unknown airport code {code}.")


class _Generator:
    """Builds one query's itineraries from its seed."""

    def __init__(self, provider: DemoProvider, query: SearchQuery) -> None:
        self.provider = provider
        self.places = provider.places
        self.query = query
        # The flights depend on route, dates and cabin only: more travellers or another
        # currency change the price, not the schedule.
        seed = stable_seed(
            ",".join(sorted(query.origin.airports)),
            ",".join(sorted(query.destination.airports)),
            query.departure,
            query.return_date,
            query.cabin.value,
        )
        self.rng = random.Random(seed)  # noqa: S311 - demo data, not security
        self.currency = query.currency.upper()
        self.today = provider._today()

    def itineraries(self) -> list[Itinerary]:
        pairs = self._airport_pairs()
        if not pairs:
            return []
        routings = [(o, d, r) for o, d in pairs for r in _routings(self.places, o, d)]
        if not routings:
            return []
        wanted = self.rng.randint(5, 15)
        weights = [_routing_weight(o, d, r, self.places) for o, d, r in routings]
        ranked = [r for _, r in sorted(zip(weights, routings, strict=True), key=lambda x: -x[0])]
        # Every good way to fly shows up once; popular ones (non-stop, main airports) get more
        # departures through the day.
        plan = ranked[:wanted]
        while len(plan) < wanted:
            plan.append(self.rng.choices(routings, weights=weights)[0])
        results: dict[str, Itinerary] = {}
        for origin, destination, hubs in plan:
            itinerary = self._itinerary(origin, destination, hubs)
            results.setdefault(itinerary.id, itinerary)
        return sorted(results.values(), key=lambda i: (i.price.amount, i.departure))

    def _airport_pairs(self) -> list[tuple[Airport, Airport]]:
        origins = [self.places.get(c) for c in self.query.origin.airports[:4]]
        destinations = [self.places.get(c) for c in self.query.destination.airports[:4]]
        return [
            (o, d)
            for o in origins
            for d in destinations
            if o.iata != d.iata and airport_distance_km(o, d) >= 100
        ]

    def _itinerary(self, origin: Airport, destination: Airport, hubs: tuple[str, ...]) -> Itinerary:
        legs = _legs(self.places, origin, destination, hubs, self.rng)
        outbound = self._direction(legs, self.query.departure, inbound=False)
        segments = list(outbound)
        fare = self._fare(legs, self.query.departure, outbound[0].departure)
        if self.query.return_date is not None:
            back = _reverse(legs)
            inbound = self._direction(back, self.query.return_date, inbound=True)
            segments += inbound
            fare = (fare + self._fare(back, self.query.return_date, inbound[0].departure)) * 0.92
        price = self._total(fare)
        price_lines = self._price_lines(fare)
        signature = ";".join(
            f"{s.flight_number}@{s.departure.isoformat()}{'R' if s.inbound else ''}"
            for s in segments
        )
        digest = hashlib.blake2b(
            f"{self.query.cache_key()}|{signature}".encode(), digest_size=8
        ).hexdigest()
        itinerary_id = f"demo-{digest}"
        low_cost = all(s.carrier in LOW_COST for s in segments)
        return Itinerary(
            id=itinerary_id,
            provider=DEMO,
            segments=tuple(segments),
            price=price,
            booking_token=f"demo:{itinerary_id}",
            seats_left=None if self.rng.random() < 0.4 else self.rng.randint(1, 9),
            baggage=self._baggage(low_cost),
            price_lines=price_lines,
            taxes=_sum((line.taxes_each or line.each * 0) * line.count for line in price_lines),
            rules=self._rules(low_cost),
        )

    def _direction(self, legs: list[_Leg], day: date, *, inbound: bool) -> list[Segment]:
        # Connecting itineraries start earlier in the day, so the connection is not overnight.
        latest = 22 * 60 if len(legs) == 1 else 17 * 60
        start_minutes = self.rng.randrange(6 * 60, latest, 5)
        zone = _zone(legs[0].origin.tz)
        departure = datetime.combine(day, time(start_minutes // 60, start_minutes % 60), zone)
        departure_utc = departure.astimezone(UTC)
        segments: list[Segment] = []
        for index, leg in enumerate(legs):
            if index:
                layover = self.rng.randrange(_MIN_LAYOVER, _MAX_LAYOVER, 5)
                departure_utc = segments[-1].arrival.astimezone(UTC) + timedelta(minutes=layover)
                departure_utc = _skip_night(departure_utc, _zone(leg.origin.tz))
            arrival_utc = departure_utc + timedelta(
                minutes=block_minutes(leg.origin, leg.destination)
            )
            number = _flight_number(leg, departure_utc)
            segments.append(
                Segment(
                    carrier=leg.carrier,
                    flight_number=f"{leg.carrier}{number}",
                    origin=leg.origin.iata,
                    destination=leg.destination.iata,
                    departure=departure_utc.astimezone(_zone(leg.origin.tz)),
                    arrival=arrival_utc.astimezone(_zone(leg.destination.tz)),
                    inbound=inbound,
                )
            )
        return segments

    def _fare(self, legs: list[_Leg], day: date, departure: datetime) -> float:
        """One adult, one direction, in EUR."""
        flown = sum(leg.distance for leg in legs)
        direct = airport_distance_km(legs[0].origin, legs[-1].destination)
        distance = direct + 0.35 * (flown - direct)
        fare = 25 + 0.06 * min(distance, 2000) + 0.04 * max(0.0, distance - 2000)
        if all(leg.carrier in LOW_COST for leg in legs):
            fare *= 0.7
        fare *= {1: 1.15, 2: 1.0}.get(len(legs), 0.9)
        days_ahead = (day - self.today).days
        fare *= next(f for limit, f in _AHEAD if days_ahead < limit)
        fare *= _WEEKDAY[day.weekday()]
        if departure.hour < 7:
            fare *= 0.92
        cabin = self.query.cabin
        factor = _CABIN_FACTOR[cabin]
        if distance < 2500 and cabin in (Cabin.BUSINESS, Cabin.FIRST):
            factor = 2.3  # short-haul business is a blocked middle seat, not a flat bed
        fare *= factor
        return fare * self.rng.uniform(0.85, 1.25)

    def _total(self, adult_fare_eur: float) -> Money:
        passengers = self.query.passengers
        adult = self._money(adult_fare_eur)
        child = self._money(adult_fare_eur * 0.75)
        infant = self._money(adult_fare_eur * 0.10)
        return adult * passengers.adults + child * passengers.children + infant * passengers.infants

    def _price_lines(self, adult_fare_eur: float) -> tuple[PriceLine, ...]:
        """The split of ``_total`` per category, a fifth of each fare being taxes and fees."""
        passengers = self.query.passengers
        shares = (
            (PassengerCategory.ADULT, passengers.adults, 1.0),
            (PassengerCategory.CHILD, passengers.children, 0.75),
            (PassengerCategory.INFANT, passengers.infants, 0.10),
        )
        lines = []
        for category, count, share in shares:
            if count:
                each = self._money(adult_fare_eur * share)
                taxes = Money(amount=each.amount // 5, currency=each.currency)
                lines.append(PriceLine(category=category, count=count, each=each, taxes_each=taxes))
        return tuple(lines)

    def _rules(self, low_cost: bool) -> FareRules:
        """Low-cost fares change for a fee and never refund; network economy refunds for a fee;
        business and first change and refund free. Fixed by the fare, not drawn at random."""
        if self.query.cabin in (Cabin.BUSINESS, Cabin.FIRST):
            zero = self._money(0) * 0
            return FareRules(refundable=True, refund_fee=zero, changeable=True, change_fee=zero)
        if low_cost:
            return FareRules(refundable=False, changeable=True, change_fee=self._money(45))
        return FareRules(
            refundable=True,
            refund_fee=self._money(100),
            changeable=True,
            change_fee=self._money(60),
        )

    def _money(self, eur: float) -> Money:
        """A whole-unit fare in the query currency (JPY to the ten, like airlines quote)."""
        major = Decimal(str(round(eur, 2))) * _EUR_RATES[self.currency]
        step = Decimal(10) if currency_exponent(self.currency) == 0 and major > 1000 else 1
        whole = max(Decimal(1), (major / step).quantize(Decimal(1)) * step)
        return Money.from_decimal(whole, self.currency)

    def _baggage(self, low_cost: bool) -> Baggage:
        if low_cost:
            return Baggage(
                hand_kg=10, hold_kg=None, first_hold_bag=self._money(self.rng.choice((25, 30, 35)))
            )
        premium = self.query.cabin in (Cabin.BUSINESS, Cabin.FIRST)
        return Baggage(hand_kg=8, hold_kg=32 if premium else 23)


def _sum(amounts: Iterable[Money]) -> Money | None:
    total: Money | None = None
    for amount in amounts:
        total = amount if total is None else total + amount
    return total


_AHEAD = ((3, 1.6), (7, 1.35), (14, 1.2), (30, 1.05), (90, 1.0), (10_000, 0.95))
_WEEKDAY = (1.0, 0.9, 0.9, 1.0, 1.12, 0.97, 1.12)  # Monday first


# How long the demo airline holds a booking's seats unpaid.
DEMO_HOLD = timedelta(days=2)


def _demo_pnr(booking_id: str) -> str:
    """A six-character airline reference, the same for a booking every time."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    seed = stable_seed("pnr", booking_id)
    return "".join(alphabet[(seed >> (5 * i)) % len(alphabet)] for i in range(6))


def block_minutes(origin: Airport, destination: Airport) -> int:
    """Gate-to-gate minutes: cruise time plus taxi and climb; jet streams help eastbound."""
    distance = airport_distance_km(origin, destination)
    cruise = distance / _CRUISE_KMH * 60
    eastbound = ((destination.lon - origin.lon + 540) % 360 - 180) > 0
    cruise *= 0.96 if eastbound else 1.05
    return max(35, int(round((cruise + _TAXI_MINUTES) / 5) * 5))


def _skip_night(departure_utc: datetime, zone: ZoneInfo) -> datetime:
    """Connections do not leave between 00:30 and 05:30 local: wait for the morning wave."""
    local = departure_utc.astimezone(zone)
    minutes = local.hour * 60 + local.minute
    if 30 <= minutes < 5 * 60 + 30:
        return local.replace(hour=5, minute=45 + minutes % 15).astimezone(UTC)
    return departure_utc


def _flight_number(leg: _Leg, departure_utc: datetime) -> int:
    seed = stable_seed(leg.carrier, leg.origin.iata, leg.destination.iata, departure_utc.hour)
    if leg.distance > 4000:
        return 1 + seed % 298
    return 300 + seed % 1700


def _tier(places: PlaceIndex, iata: str) -> int:
    """4: intercontinental hub; 3: major; 2: international; 1: other."""
    return 4 if iata in GLOBAL_HUBS else places.tier(iata)


def _direct_allowed(places: PlaceIndex, a: Airport, b: Airport) -> bool:
    distance = airport_distance_km(a, b)
    ta, tb = _tier(places, a.iata), _tier(places, b.iata)
    if distance < 100:
        return False
    if distance <= 800:
        return True
    if distance <= 1800:
        return max(ta, tb) >= 2
    if distance <= 4500:
        return max(ta, tb) >= 3 and min(ta, tb) >= 2
    if distance <= 9000:
        return max(ta, tb) == 4 and min(ta, tb) >= 3
    return a.iata in _ULTRA_LONG_HUBS and b.iata in _ULTRA_LONG_HUBS and distance <= 15500


@cache
def _hub_airports(places: PlaceIndex) -> tuple[Airport, ...]:
    codes = sorted(GLOBAL_HUBS | set(HUB_CARRIERS))
    return tuple(a for a in (places.find(c) for c in codes) if a is not None)


@lru_cache(maxsize=4096)
def _routings(
    places: PlaceIndex, origin: Airport, destination: Airport
) -> tuple[tuple[str, ...], ...]:
    """Ways to fly: () for non-stop, (hub,) for one stop, (hub1, hub2) for two."""
    direct = airport_distance_km(origin, destination)
    routings: list[tuple[str, ...]] = []
    if _direct_allowed(places, origin, destination):
        routings.append(())
    limit = 1.6 if direct < 1500 else 1.35 if direct < 5000 else 1.25
    shortest_leg = max(250.0, 0.08 * direct)  # nobody connects in Philadelphia for JFK-LHR
    one_stop: list[tuple[float, str]] = []
    for hub in _hub_airports(places):
        if hub.iata in (origin.iata, destination.iata):
            continue
        first, second = airport_distance_km(origin, hub), airport_distance_km(hub, destination)
        if min(first, second) < shortest_leg or (first + second) / direct > limit:
            continue
        if _direct_allowed(places, origin, hub) and _direct_allowed(places, hub, destination):
            one_stop.append(((first + second) / direct, hub.iata))
    one_stop.sort()
    # A short hop that has non-stop flights is rarely sold with a connection.
    routings += [(hub,) for _, hub in one_stop[: 2 if routings and direct < 1500 else 6]]
    if len(routings) < 2:
        routings += _via_hubs(places, origin, destination)
    return tuple(dict.fromkeys(routings))


_STOP_PENALTY_KM = 1500.0  # a connection costs as much time as flying this much further


@cache
def _hub_links(places: PlaceIndex) -> dict[str, list[tuple[str, float]]]:
    """Which hubs have non-stop flights between them, with the distance."""
    hubs = _hub_airports(places)
    links: dict[str, list[tuple[str, float]]] = {h.iata: [] for h in hubs}
    for a in hubs:
        for b in hubs:
            if a.iata != b.iata and _direct_allowed(places, a, b):
                links[a.iata].append((b.iata, airport_distance_km(a, b)))
    return links


def _gateways(places: PlaceIndex, airport: Airport, other: Airport) -> list[tuple[str, float]]:
    """Hubs an airport has flights to: the ones in range, or at least the nearest two."""
    reachable = [
        (hub.iata, airport_distance_km(airport, hub))
        for hub in _hub_airports(places)
        if hub.iata not in (airport.iata, other.iata)
    ]
    reachable.sort(key=lambda pair: pair[1])
    allowed = [
        (code, km) for code, km in reachable if _direct_allowed(places, airport, places.get(code))
    ]
    return allowed[:10] or reachable[:2]


def _via_hubs(places: PlaceIndex, origin: Airport, destination: Airport) -> list[tuple[str, ...]]:
    """Connections for pairs no single hub joins: the shortest ways through the hub network
    (distance plus a penalty per stop), and a few alternatives avoiding their first hub."""
    links = _hub_links(places)
    start = _gateways(places, origin, destination)
    finish = dict(_gateways(places, destination, origin))
    # A hub at either end is itself in the network.
    if origin.iata in links:
        start.append((origin.iata, 0.0))
    if destination.iata in links:
        finish[destination.iata] = 0.0
    ends = (origin.iata, destination.iata)

    def shortest(banned: frozenset[str]) -> tuple[str, ...] | None:
        best: dict[str, float] = {}
        previous: dict[str, str] = {}
        queue: list[tuple[float, str]] = []
        for code, km in start:
            if code not in banned:
                best[code] = km
                heapq.heappush(queue, (km, code))
        done: tuple[float, str] | None = None
        while queue:
            cost, code = heapq.heappop(queue)
            if cost > best.get(code, math.inf):
                continue
            if code in finish and (done is None or cost + finish[code] < done[0]):
                done = (cost + finish[code], code)
            for neighbour, km in links.get(code, ()):
                if neighbour in banned:
                    continue
                candidate = cost + km + _STOP_PENALTY_KM
                if candidate < best.get(neighbour, math.inf):
                    best[neighbour] = candidate
                    previous[neighbour] = code
                    heapq.heappush(queue, (candidate, neighbour))
        if done is None:
            return None
        path = [done[1]]
        while path[-1] in previous:
            path.append(previous[path[-1]])
        return tuple(h for h in reversed(path) if h not in ends)

    routes: list[tuple[str, ...]] = []
    first = shortest(frozenset())
    if first is None:
        return routes
    routes.append(first)
    for hub in first:
        alternative = shortest(frozenset({hub}))
        if alternative is not None and len(alternative) <= len(first) + 1:
            routes.append(alternative)
    return list(dict.fromkeys(routes))[:3]


def _routing_weight(
    origin: Airport, destination: Airport, hubs: tuple[str, ...], places: PlaceIndex
) -> float:
    weight = {0: 3.0, 1: 2.0, 2: 0.8}.get(len(hubs), 0.4)
    # The main airports of a city get most of the flights.
    return weight * _tier(places, origin.iata) * _tier(places, destination.iata)


def _legs(
    places: PlaceIndex,
    origin: Airport,
    destination: Airport,
    hubs: tuple[str, ...],
    rng: random.Random,
) -> list[_Leg]:
    stops = [origin, *(places.get(h) for h in hubs if h != origin.iata), destination]
    stops = [s for i, s in enumerate(stops) if i == 0 or s.iata != stops[i - 1].iata]
    if not hubs:
        carrier = _direct_carrier(origin, destination, rng)
        return [_Leg(origin, destination, carrier)]
    legs: list[_Leg] = []
    for index in range(len(stops) - 1):
        a, b = stops[index], stops[index + 1]
        # Each leg is flown by the airline whose hub it touches, the last hub's for the last leg.
        hub = b if index < len(stops) - 2 else a
        legs.append(_Leg(a, b, _hub_carrier(hub)))
    return legs


def _reverse(legs: list[_Leg]) -> list[_Leg]:
    return [_Leg(leg.destination, leg.origin, leg.carrier) for leg in reversed(legs)]


def _hub_carrier(hub: Airport) -> str:
    carrier = HUB_CARRIERS.get(hub.iata)
    if carrier:
        return carrier
    home = COUNTRY_CARRIERS.get(hub.country)
    if home:
        return home[0]
    return REGIONAL_LOW_COST[region_of(hub.country, hub.lat, hub.lon)][0]


def _direct_carrier(origin: Airport, destination: Airport, rng: random.Random) -> str:
    distance = airport_distance_km(origin, destination)
    candidates: list[str] = []
    for airport in (origin, destination):
        if airport.iata in HUB_CARRIERS:
            candidates.append(HUB_CARRIERS[airport.iata])
        candidates += COUNTRY_CARRIERS.get(airport.country, ())[:2]
    origin_region = region_of(origin.country, origin.lat, origin.lon)
    same_region = origin_region == region_of(destination.country, destination.lat, destination.lon)
    premium = {origin.iata, destination.iata} & _NO_LOW_COST
    if same_region and distance < 3500 and not premium:
        candidates += REGIONAL_LOW_COST.get(origin_region, ())
    if distance > 4500:
        candidates = [c for c in candidates if c not in LOW_COST]
    if not candidates:
        candidates = [_hub_carrier(origin)]
    return rng.choice(list(dict.fromkeys(candidates)))
