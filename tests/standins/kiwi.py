"""A local stand-in for Kiwi.com's Tequila API, on 127.0.0.1, for the Kiwi adapter's tests.

Payloads follow the documented shape (REFERENCE.md, section 1), built from real airports: times
are right for each airport's zone, and ``local_*`` fields carry Tequila's quirk of ending in
``Z``. Switches on the instance make it misbehave the ways the real service does: empty results,
malformed items, 4xx, 5xx, 429 with Retry-After, slow answers, a price change or sold-out
flights on check_flights, and an account without booking access. It counts requests per path
and refuses any request without the right ``apikey`` header.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from services.flights.places import PlaceIndex, airport_distance_km
from services.models import Airport

API_KEY = "test-tequila-key"


@dataclass
class _Offer:
    price: float
    currency: str


@dataclass
class KiwiStandIn:
    """Switches (set them between requests):

    - ``empty``: searches find nothing; ``malformed``: broken items among the good ones;
    - ``fail_with``: statuses for the next GET requests, one per request (e.g. ``[500, 500]``);
      with ``retry_after`` a 429 carries that header;
    - ``delay``: seconds to wait before answering any request;
    - ``check_mode``: ``"ok"``, ``"price_change"``, ``"invalid"`` or ``"expired"``;
      ``checks_before_ready``: polls answered with ``flights_checked=false`` first;
    - ``save_status``: HTTP status of save_booking (403: account without booking access);
    - ``confirm_outcome``: how confirm_payment answers: ``"ok"``, ``"declined"`` (HTTP 200 with
      a non-zero status: nothing was paid), ``"error"`` (HTTP 502 after the payment went
      through, as a proxy in front of Kiwi can answer) or ``"slow"`` (paid, then no answer
      before the client gives up);
    - ``price_change_factor``: how much higher the final ``total`` is in ``"price_change"``;
    - ``hold``: paths whose requests are held (after their effect, before the answer) until
      ``release()``; ``held`` is set when one arrives. A test kills the client meanwhile.
    """

    api_key: str = API_KEY
    empty: bool = False
    malformed: bool = False
    fail_with: list[int] = field(default_factory=list)
    retry_after: int | None = None
    delay: float = 0.0
    check_mode: str = "ok"
    checks_before_ready: int = 0
    save_status: int = 200
    confirm_outcome: str = "ok"
    price_change_factor: float = 1.12

    hold: set[str] = field(default_factory=set)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    requests: Counter[str] = field(default_factory=Counter)
    rejected_keys: int = 0
    last_params: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    saved_bookings: list[dict[str, Any]] = field(default_factory=list)
    confirmed: list[dict[str, Any]] = field(default_factory=list)

    _offers: dict[str, _Offer] = field(default_factory=dict)
    _polls: Counter[str] = field(default_factory=Counter)
    _runner: web.AppRunner | None = None
    base_url: str = ""

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/v2/search", self._search)
        app.router.add_get("/locations/query", self._locations)
        app.router.add_get("/v2/booking/check_flights", self._check_flights)
        app.router.add_post("/v2/booking/save_booking", self._save_booking)
        app.router.add_post("/v2/booking/confirm_payment", self._confirm_payment)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def places(self) -> PlaceIndex:
        return PlaceIndex.default()

    # middleware: key check, counting, delays, injected failures ------------------------------
    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests[request.path] += 1
        self.last_params[request.path] = {key: request.query.getall(key) for key in request.query}
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.headers.get("apikey") != self.api_key:
            self.rejected_keys += 1
            return web.json_response({"message": "Invalid API key"}, status=403)
        if request.method == "GET" and self.fail_with:
            status = self.fail_with.pop(0)
            headers = {}
            if status == 429 and self.retry_after is not None:
                headers["Retry-After"] = str(self.retry_after)
            body = {"message": _REASONS.get(status, "error"), "status": status}
            return web.json_response(body, status=status, headers=headers)
        response: web.StreamResponse = await handler(request)
        if request.path in self.hold:
            self.held.set()
            await self._released.wait()
        return response

    def release(self) -> None:
        """Answer the held requests and hold no more."""
        self.hold.clear()
        self._released.set()

    # search ----------------------------------------------------------------------------------
    async def _search(self, request: web.Request) -> web.Response:
        query = request.query
        required = ("fly_from", "date_from", "date_to")
        missing = [name for name in required if not query.get(name)]
        if missing:
            return web.json_response(
                {"message": f"missing parameter {missing[0]}", "status": 422}, status=422
            )
        try:
            departure = datetime.strptime(query["date_from"], "%d/%m/%Y").date()
            back = query.get("return_from")
            return_date = datetime.strptime(back, "%d/%m/%Y").date() if back else None
        except ValueError:
            return web.json_response(
                {"message": "date_from: invalid date format, use dd/mm/yyyy"}, status=400
            )
        origins = self._airports(query["fly_from"])
        destinations = self._airports(query.get("fly_to", ""))
        adults = int(query.get("adults", "1"))
        children = int(query.get("children", "0"))
        infants = int(query.get("infants", "0"))
        currency = query.get("curr", "EUR")
        data: list[dict[str, Any]] = []
        if not self.empty and origins and destinations:
            data = self._itineraries(
                origins[0], destinations[0], departure, return_date, currency,
                (adults, children, infants),
            )  # fmt: skip
            if self.malformed:
                data = _malformed(data[0]) + data
        return web.json_response(
            {
                "search_id": secrets.token_hex(16),
                "currency": currency,
                "fx_rate": 1,
                "data": data,
                "_results": len(data),
                "search_params": {
                    "flyFrom_type": "airport",
                    "to_type": "airport",
                    "seats": {
                        "passengers": adults + children + infants,
                        "adults": adults,
                        "children": children,
                        "infants": infants,
                    },
                },
            }
        )

    def _airports(self, spec: str) -> list[Airport]:
        found: list[Airport] = []
        for part in spec.split(","):
            code = part.strip().upper()
            if code.startswith(("CITY:", "AIRPORT:")):
                code = code.split(":", 1)[1]
            city = self.places.city_location(code)
            codes = city.airports if city is not None else (code,)
            found += [a for a in (self.places.find(c) for c in codes) if a is not None]
        return found

    def _itineraries(
        self,
        origin: Airport,
        destination: Airport,
        departure: date,
        return_date: date | None,
        currency: str,
        seats: tuple[int, int, int],
    ) -> list[dict[str, Any]]:
        hub = self.places.get("FRA" if "FRA" not in (origin.iata, destination.iata) else "AMS")
        plans = [
            ("TP", [origin, destination], time(7, 30), 1.0),
            ("LH", [origin, hub, destination], time(10, 10), 0.82),
            ("TP", [origin, destination], time(18, 45), 1.17),
        ]
        items = []
        base = 40 + 0.07 * airport_distance_km(origin, destination)
        for carrier, stops, leaves, factor in plans:
            route = self._route(carrier, stops, departure, leaves, inbound=False)
            if return_date is not None:
                back = list(reversed(stops))
                route += self._route(carrier, back, return_date, time(9, 5), inbound=True)
            adults, children, infants = seats
            fare = round(base * factor * (2 if return_date else 1), 2)
            price = round(fare * adults + fare * 0.75 * children + fare * 0.1 * infants)
            items.append(self._item(route, price, currency, seats, return_date is not None))
        return items

    def _route(
        self, carrier: str, stops: list[Airport], day: date, leaves: time, *, inbound: bool
    ) -> list[dict[str, Any]]:
        legs = []
        departure = datetime.combine(day, leaves, ZoneInfo(stops[0].tz)).astimezone(UTC)
        for a, b in itertools.pairwise(stops):
            minutes = int(airport_distance_km(a, b) / 820 * 60 + 35)
            arrival = departure + timedelta(minutes=minutes)
            number = (
                100
                + int(hashlib.sha256(f"{carrier}{a.iata}{b.iata}".encode()).hexdigest(), 16) % 1800
            )
            segment_id = secrets.token_hex(12) + "_0"
            legs.append(
                {
                    "id": segment_id,
                    "combination_id": segment_id[:-2],
                    "flyFrom": a.iata,
                    "flyTo": b.iata,
                    "cityFrom": a.city,
                    "cityTo": b.city,
                    "cityCodeFrom": a.iata,
                    "cityCodeTo": b.iata,
                    "airline": carrier,
                    "flight_no": number,
                    "operating_carrier": carrier,
                    "operating_flight_no": str(number),
                    "fare_basis": "QOW" + a.iata,
                    "fare_category": "M",
                    "fare_classes": "Q",
                    "fare_family": "",
                    "return": 1 if inbound else 0,
                    "bags_recheck_required": False,
                    "vi_connection": False,
                    "guarantee": False,
                    "equipment": None,
                    "vehicle_type": "aircraft",
                    "local_departure": _kiwi_local(departure, a.tz),
                    "utc_departure": _kiwi_utc(departure),
                    "local_arrival": _kiwi_local(arrival, b.tz),
                    "utc_arrival": _kiwi_utc(arrival),
                }
            )
            departure = arrival + timedelta(minutes=95)
        return legs

    def _item(
        self,
        route: list[dict[str, Any]],
        price: float,
        currency: str,
        seats: tuple[int, int, int],
        is_return: bool,
    ) -> dict[str, Any]:
        out = [r for r in route if not r["return"]]
        back = [r for r in route if r["return"]]
        token = secrets.token_urlsafe(48)
        self._offers[token] = _Offer(price=price, currency=currency)

        def seconds(legs: list[dict[str, Any]]) -> int:
            if not legs:
                return 0
            start = datetime.fromisoformat(legs[0]["utc_departure"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(legs[-1]["utc_arrival"].replace("Z", "+00:00"))
            return int((end - start).total_seconds())

        first, last = out[0], out[-1]
        return {
            "id": "|".join(r["id"] for r in route),
            "flyFrom": first["flyFrom"],
            "flyTo": last["flyTo"],
            "cityFrom": first["cityFrom"],
            "cityTo": last["cityTo"],
            "cityCodeFrom": first["cityCodeFrom"],
            "cityCodeTo": last["cityCodeTo"],
            "countryFrom": {"code": "PT", "name": "Portugal"},
            "countryTo": {"code": "DE", "name": "Germany"},
            "local_departure": first["local_departure"],
            "utc_departure": first["utc_departure"],
            "local_arrival": last["local_arrival"],
            "utc_arrival": last["utc_arrival"],
            "nightsInDest": 7 if is_return else None,
            "distance": 1859.22,
            "duration": {
                "departure": seconds(out),
                "return": seconds(back),
                "total": seconds(out) + seconds(back),
            },
            "price": price,
            "conversion": {currency: price},
            "fare": {"adults": price, "children": 0, "infants": 0},
            "bags_price": {"1": 34.95, "2": 69.9},
            "baglimit": {
                "hand_width": 20,
                "hand_height": 40,
                "hand_length": 55,
                "hand_weight": 10,
                "hold_width": 81,
                "hold_height": 119,
                "hold_length": 119,
                "hold_dimensions_sum": 319,
                "hold_weight": 20,
            },
            "availability": {"seats": 4 if len(out) == 1 else None},
            "airlines": sorted({r["airline"] for r in route}),
            "route": route,
            "booking_token": token,
            "deep_link": f"https://www.kiwi.com/deep?from={first['flyFrom']}&to={last['flyTo']}",
            "facilitated_booking_available": True,
            "pnr_count": 1,
            "has_airport_change": False,
            "technical_stops": 0,
            "throw_away_ticketing": False,
            "hidden_city_ticketing": False,
            "virtual_interlining": False,
            "quality": 66.7 if len(out) == 1 else 190.3,
        }

    # locations -------------------------------------------------------------------------------
    async def _locations(self, request: web.Request) -> web.Response:
        term = request.query.get("term", "")
        result = self.places.resolve(term)
        places = [result.location] if result.location else list(result.choices)
        types = request.query.getall("location_types", [])
        locations = []
        for place in places:
            kind = place.kind.value
            if types and kind not in types:
                continue
            airport = self.places.get(place.airports[0])
            country = {"id": place.country, "name": place.country, "code": place.country}
            entry: dict[str, Any] = {
                "id": f"{place.name.lower().replace(' ', '-')}_{place.country.lower()}",
                "active": True,
                "code": place.code,
                "icao": None,
                "name": place.name,
                "slug": place.name.lower().replace(" ", "-"),
                "type": kind,
                "timezone": airport.tz,
                "rank": 10,
                "location": {"lat": airport.lat, "lon": airport.lon},
            }
            if kind == "airport":
                entry["city"] = {
                    "id": airport.city.lower(),
                    "name": airport.city,
                    "code": place.code,
                    "country": country,
                    "region": {"id": "region", "name": "Region"},
                    "continent": {"id": "continent", "name": "Continent"},
                }
            else:
                entry["country"] = country
            locations.append(entry)
        locations.append({"id": "broken", "type": "airport"})  # a malformed entry to skip
        return web.json_response(
            {
                "locations": locations,
                "meta": {"locale": {"code": "en-US", "status": "Locale not specified"}},
                "last_refresh": 1700000000,
                "results_retrieved": len(locations),
            }
        )

    # booking ---------------------------------------------------------------------------------
    async def _check_flights(self, request: web.Request) -> web.Response:
        token = request.query.get("booking_token", "")
        offer = self._offers.get(token)
        if offer is None or self.check_mode == "expired":
            return web.json_response({"message": "Expired booking token"}, status=400)
        self._polls[token] += 1
        ready = self._polls[token] > self.checks_before_ready
        currency = request.query.get("currency", "EUR")
        amount = offer.price
        changed = ready and self.check_mode == "price_change"
        if changed:
            amount = round(offer.price * self.price_change_factor, 2)
        return web.json_response(
            {
                "session_id": request.query.get("session_id") or secrets.token_hex(10),
                "server_time": 1700000000,
                "pnum": 1,
                "flights": [],
                "flights_checked": ready,
                "flights_to_check": not ready,
                "flights_real_checked": ready,
                "flights_invalid": ready and self.check_mode == "invalid",
                "price_change": changed,
                "total": amount,  # EUR in the real API; the stand-in quotes EUR searches
                "orig_price": offer.price,
                "currency": "EUR",
                "conversion": {
                    "currency": currency,
                    "amount": amount,
                    "adults_price": amount,
                    "children_price": 0,
                    "infants_price": 0,
                },
                "booking_token": token,
                "baggage": {
                    "definitions": {},
                    "combinations": {
                        "hand_bag": [
                            {
                                "indices": [0],
                                "category": "hand_bag",
                                "conditions": {"passenger_groups": ["adult", "child"]},
                                "price": {"currency": "EUR", "amount": 0},
                            }
                        ],
                        "hold_bag": [
                            {
                                "indices": [],
                                "category": "hold_bag",
                                "conditions": {"passenger_groups": ["adult", "child"]},
                                "price": {"currency": "EUR", "amount": 0},
                            },
                            {
                                "indices": [1],
                                "category": "hold_bag",
                                "conditions": {"passenger_groups": ["adult", "child"]},
                                "price": {"currency": "EUR", "amount": 34.95},
                            },
                        ],
                    },
                },
                "age_category_thresholds": {"adult": 12, "child": 2},
                "document_options": {"document_need": 2, "checkin_date": 0},
            }
        )

    async def _save_booking(self, request: web.Request) -> web.Response:
        if self.save_status != 200:
            return web.json_response(
                {"message": "Partner is not allowed to book"}, status=self.save_status
            )
        body = await request.json()
        if not body.get("booking_token") or not body.get("passengers"):
            return web.json_response({"message": "invalid booking"}, status=422)
        self.saved_bookings.append(body)
        return web.json_response(
            {
                "booking_id": 4_000_000 + len(self.saved_bookings),
                "transaction_id": secrets.token_hex(8),
                "status": "success",
                "status_code": 0,
                "sandbox": True,
            }
        )

    async def _confirm_payment(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.confirm_outcome == "declined":
            return web.json_response({"status": 1, "msg": "Insufficient deposit"})
        self.confirmed.append(body)
        if self.confirm_outcome == "error":
            return web.json_response({"message": _REASONS[502]}, status=502)
        if self.confirm_outcome == "slow":
            await asyncio.sleep(30)
        return web.json_response({"status": 0, "msg": ""})


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _kiwi_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _kiwi_local(moment: datetime, zone: str) -> str:
    """Wall-clock time at the airport, ending in 'Z' the way Tequila writes it."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _malformed(good: dict[str, Any]) -> list[Any]:
    """Broken items of the kinds a real feed has had: missing fields, wrong types, bad times."""
    no_route = {**good, "id": "broken-no-route", "route": []}
    bad_price = {**good, "id": "broken-price", "price": "n/a"}
    missing_time = {
        **good,
        "id": "broken-time",
        "route": [{k: v for k, v in good["route"][0].items() if k != "utc_departure"}],
    }
    backwards = {
        **good,
        "id": "broken-backwards",
        "route": [
            {
                **good["route"][0],
                "utc_arrival": good["route"][0]["utc_departure"],
                "utc_departure": good["route"][0]["utc_arrival"],
            }
        ],
    }
    return [no_route, bad_price, missing_time, backwards, "not an object"]
