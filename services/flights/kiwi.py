"""Kiwi.com Tequila adapter: search, locations, price check and ticketing over aiohttp.

Reads are retried (5xx, 429 honouring Retry-After, dropped connections) with exponential
backoff and jitter; a request that times out is not retried, because the traveller has already
waited the whole timeout. A circuit breaker turns a provider outage into an immediate, honest
"unavailable" answer. Writes (save_booking, confirm_payment) are never retried: a second
attempt could book twice.

Times: Tequila's ``local_*`` fields are wall-clock times that wrongly end in ``Z``; instants come
from ``utc_*`` and are shown in the airport's own zone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
)

from services.flights.base import (
    FareChangedError,
    FareIncreasedError,
    FareUnavailableError,
    FlightProvider,
    HeldOrder,
    OrderJournal,
    ProviderError,
    ProviderEvent,
    ProviderEventKind,
    ProviderUnavailableError,
    Recheck,
    Ticket,
    TicketingError,
)
from services.flights.breaker import CircuitBreaker
from services.flights.contacts import e164
from services.flights.places import PlaceIndex
from services.flights.retrying import RetryableError, RetryPolicy
from services.models import (
    Baggage,
    Booking,
    Itinerary,
    Location,
    LocationKind,
    Passengers,
    SearchQuery,
    Segment,
    Traveller,
)
from services.money import Money, is_currency

log = logging.getLogger(__name__)

KIWI = "kiwi"
DEFAULT_BASE_URL = "https://api.tequila.kiwi.com"
_UNAVAILABLE = "Flight search is unavailable right now: try again in a minute."
# confirm_payment must follow save_booking within this (Tequila's booking flow).
KIWI_CONFIRM_WINDOW = timedelta(minutes=30)
_MAX_TERM = 64


class _MalformedError(ValueError):
    """An item of a Tequila response that does not have the documented shape."""


class KiwiProvider(FlightProvider):
    """Tequila over aiohttp. The session is opened on first use and closed by ``close()``."""

    name = KIWI
    horizon_days = 330

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        places: PlaceIndex | None = None,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 4.0,
        max_retry_after: float = 5.0,
        breaker_threshold: int = 5,
        breaker_reset: float = 60.0,
        poll_interval: float = 2.5,
        max_polls: int = 8,
        limit: int = 50,
        locale: str = "en",
        deposit_email: str | None = None,
        health_declaration_agreed: bool = False,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key:
            raise ValueError("a Kiwi API key is required")
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._places = places
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._retry = RetryPolicy(
            backoff=backoff, max_backoff=max_backoff, max_retry_after=max_retry_after
        )
        self._poll_interval = poll_interval
        self._max_polls = max(1, max_polls)
        self._limit = limit
        # Search takes a language ("en"); booking takes a language and a locale ("en-US").
        self._lang = locale.split("-", maxsplit=1)[0].lower() or "en"
        self._search_locale = self._lang
        self._locale = _booking_locale(locale)
        # Deposit partners: Kiwi mails the booking to the deposit account, not the traveller.
        self._deposit_email = deposit_email
        self._health_declaration_agreed = health_declaration_agreed
        self._session = session
        self._owns_session = session is None
        self.breaker = CircuitBreaker(
            threshold=breaker_threshold, reset_after=breaker_reset, clock=clock
        )

    @classmethod
    async def create(cls, api_key: str, **options: Any) -> KiwiProvider:
        """Build the provider with its HTTP session opened inside the running loop."""
        provider = cls(api_key, **options)
        await provider._client()
        return provider

    @property
    def places(self) -> PlaceIndex:
        if self._places is None:
            self._places = PlaceIndex.default()
        return self._places

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"apikey": self._api_key, "Accept": "application/json"}
            )
            self._owns_session = True
        return self._session

    # search ----------------------------------------------------------------------------------
    async def search(self, query: SearchQuery) -> list[Itinerary]:
        params: dict[str, str] = {
            "fly_from": self._place_param(query.origin),
            "fly_to": self._place_param(query.destination),
            "date_from": _kiwi_date(query.departure),
            "date_to": _kiwi_date(query.departure),
            "adults": str(query.passengers.adults),
            "children": str(query.passengers.children),
            "infants": str(query.passengers.infants),
            "selected_cabins": query.cabin.value,
            "curr": query.currency,
            "locale": self._search_locale,
            "limit": str(self._limit),
            "sort": "price",
            "vehicle_type": "aircraft",
            "max_sector_stopovers": "2",
        }
        if query.return_date is not None:
            params["return_from"] = _kiwi_date(query.return_date)
            params["return_to"] = _kiwi_date(query.return_date)
        body = await self._get("/v2/search", params)
        currency = body.get("currency") if isinstance(body.get("currency"), str) else None
        currency = currency if currency and is_currency(currency) else query.currency
        items = body.get("data")
        if not isinstance(items, list):
            raise ProviderUnavailableError("Kiwi answered without results: try again in a minute.")
        itineraries: list[Itinerary] = []
        for item in items:
            try:
                itineraries.append(self._itinerary(item, currency))
            except (_MalformedError, ValueError, KeyError, TypeError) as exc:
                item_id = item.get("id") if isinstance(item, dict) else None
                log.warning(
                    "skipping a malformed Kiwi itinerary (id %s): %s",
                    str(item_id)[:60],
                    str(exc)[:200],
                )
        return itineraries

    def _place_param(self, location: Location) -> str:
        """Airports as a comma list; a city known to us only by its code as ``city:XXX``."""
        unknown = [code for code in location.airports if self.places.find(code) is None]
        if location.kind is LocationKind.CITY and (
            not location.airports or (location.airports == (location.code,) and unknown)
        ):
            return f"city:{location.code}"
        return ",".join(location.airports)

    def _itinerary(self, item: Any, currency: str) -> Itinerary:
        if not isinstance(item, dict):
            raise _MalformedError("itinerary is not an object")
        route = item.get("route")
        if not isinstance(route, list) or not route:
            raise _MalformedError("no route")
        segments = tuple(self._segment(part) for part in route)
        if all(s.inbound for s in segments):
            raise _MalformedError("no outbound segment")
        price = Money.from_decimal(_decimal(item.get("price"), "price"), currency)
        if price.amount <= 0:
            raise _MalformedError("price is not positive")
        token = item.get("booking_token")
        if not isinstance(token, str) or not token:
            raise _MalformedError("no booking token")
        raw_id = str(item.get("id") or token)
        digest = hashlib.blake2b(raw_id.encode(), digest_size=8).hexdigest()
        availability = item.get("availability")
        seats = availability.get("seats") if isinstance(availability, dict) else None
        deep_link = item.get("deep_link")
        return Itinerary(
            id=f"kiwi-{digest}",
            provider=KIWI,
            segments=segments,
            price=price,
            booking_token=token,
            seats_left=seats if isinstance(seats, int) and seats >= 0 else None,
            baggage=_baggage(item, currency),
            deep_link=deep_link if isinstance(deep_link, str) and deep_link else None,
        )

    def _segment(self, part: Any) -> Segment:
        if not isinstance(part, dict):
            raise _MalformedError("segment is not an object")
        origin = str(part["flyFrom"])
        destination = str(part["flyTo"])
        carrier = str(part["airline"]).strip().upper()
        number = part.get("flight_no")
        if not carrier or number in (None, ""):
            raise _MalformedError("segment without airline or flight number")
        departure_utc = _utc(part["utc_departure"])
        arrival_utc = _utc(part["utc_arrival"])
        if arrival_utc <= departure_utc:
            raise _MalformedError("segment arrives before it departs")
        if arrival_utc - departure_utc > timedelta(hours=24):
            raise _MalformedError("segment longer than a day")
        departure = departure_utc.astimezone(
            self._zone(origin, part.get("local_departure"), departure_utc)
        )
        arrival = arrival_utc.astimezone(
            self._zone(destination, part.get("local_arrival"), arrival_utc)
        )
        return Segment(
            carrier=carrier,
            flight_number=f"{carrier}{number}",
            origin=origin,
            destination=destination,
            departure=departure,
            arrival=arrival,
            inbound=bool(part.get("return")),
        )

    def _zone(self, iata: str, local: Any, instant: datetime) -> tzinfo:
        """The airport's zone; if we do not know it (or it disagrees with Kiwi's own wall-clock
        time), the offset Kiwi's local time implies."""
        offset: timedelta | None = None
        if isinstance(local, str):
            try:
                wall = datetime.fromisoformat(local.replace("Z", "")).replace(tzinfo=None)
                offset = wall - instant.replace(tzinfo=None)
            except ValueError:
                offset = None
        airport = self.places.find(iata)
        if airport is not None:
            try:
                zone = ZoneInfo(airport.tz)
            except (ZoneInfoNotFoundError, ValueError):
                zone = None
            if zone is not None and (
                offset is None or instant.astimezone(zone).utcoffset() == offset
            ):
                return zone
        if offset is not None and abs(offset) < timedelta(hours=15):
            return timezone(offset)
        return UTC

    # locations -------------------------------------------------------------------------------
    async def locations(self, term: str, *, limit: int = 8) -> list[Location]:
        term = " ".join(str(term).split())
        if len(term) < 2 or len(term) > _MAX_TERM:
            return []
        params: list[tuple[str, str]] = [
            ("term", term),
            ("locale", "en-US"),
            ("location_types", "airport"),
            ("location_types", "city"),
            ("limit", str(max(1, min(limit, 20)))),
            ("active_only", "true"),
        ]
        body = await self._get("/locations/query", params)
        found = body.get("locations")
        if not isinstance(found, list):
            return []
        locations: list[Location] = []
        for item in found:
            location = self._location(item)
            if location is not None:
                locations.append(location)
        return locations

    def _location(self, item: Any) -> Location | None:
        if not isinstance(item, dict):
            return None
        code = item.get("code")
        name = item.get("name")
        kind = item.get("type")
        if not isinstance(code, str) or len(code) != 3 or not isinstance(name, str):
            return None
        city = item.get("city") if isinstance(item.get("city"), dict) else {}
        country = (city or {}).get("country") or item.get("country") or {}
        country_code = country.get("code", "") if isinstance(country, dict) else ""
        code = code.upper()
        try:
            if kind == "airport":
                return Location(
                    code=code,
                    name=name,
                    kind=LocationKind.AIRPORT,
                    country=str(country_code),
                    airports=(code,),
                )
            if kind == "city":
                known = self.places.city_location(code)
                airports = known.airports if known is not None else (code,)
                return Location(
                    code=code,
                    name=name,
                    kind=LocationKind.CITY,
                    country=str(country_code),
                    airports=airports,
                )
        except ValueError:
            return None
        return None

    # price check -----------------------------------------------------------------------------
    async def recheck(self, itinerary: Itinerary, passengers: Passengers) -> Recheck:
        if itinerary.provider != KIWI or not itinerary.booking_token:
            raise ProviderError("this offer is not a Kiwi fare")
        try:
            checked = await self._check_flights(itinerary, passengers)
        except _ExpiredError:
            return Recheck(available=False, price=itinerary.price)
        if checked.get("flights_invalid"):
            return Recheck(available=False, price=itinerary.price)
        token = checked.get("booking_token")
        return Recheck(
            available=True,
            price=_checked_price(checked, itinerary.price),
            booking_token=token if isinstance(token, str) and token else itinerary.booking_token,
        )

    async def _check_flights(self, itinerary: Itinerary, passengers: Passengers) -> dict[str, Any]:
        params: dict[str, str] = {
            "booking_token": itinerary.booking_token or "",
            "bnum": "0",
            "adults": str(passengers.adults),
            "children": str(passengers.children),
            "infants": str(passengers.infants),
            "currency": itinerary.price.currency,
        }
        for poll in range(self._max_polls):
            try:
                body = await self._get("/v2/booking/check_flights", params)
            except ProviderError as exc:
                if "expired" in str(exc).lower():
                    raise _ExpiredError(str(exc)) from exc
                raise
            session_id = body.get("session_id")
            if isinstance(session_id, str) and session_id:
                params["session_id"] = session_id
            if body.get("flights_invalid") or body.get("flights_checked"):
                return body
            if poll + 1 < self._max_polls:
                await asyncio.sleep(self._poll_interval)
        raise ProviderUnavailableError(
            "The airline did not confirm the price in time: try again in a minute."
        )

    # order before charge, then ticketing ----------------------------------------------------------
    async def hold(self, booking: Booking) -> HeldOrder | None:
        """``check_flights`` then ``save_booking`` when the traveller presses Pay: Kiwi freezes
        the fare and answers a booking id and transaction id, paid after the charge by
        ``confirm_payment`` (within Kiwi's 30 minutes). An account without booking access
        holds nothing (the ticket is then issued by hand)."""
        itinerary = booking.itinerary
        if itinerary.provider != KIWI or not itinerary.booking_token:
            return None
        try:
            checked = await self._check_flights(itinerary, booking.passengers)
        except _ExpiredError as exc:
            raise FareUnavailableError("the offer expired") from exc
        if checked.get("flights_invalid"):
            raise FareUnavailableError("the flights are no longer available")
        price = _checked_price(checked, itinerary.price)
        if price != booking.amount:
            raise FareChangedError(f"the price is now {price.format()}", price=price)
        status, saved = await self._save(booking, checked)
        if status in (401, 403):
            log.warning("Kiwi save_booking not allowed for this account (HTTP %d)", status)
            return None
        if status != 200:
            raise ProviderError(f"Kiwi refused the booking (HTTP {status}): {_message(saved)}")
        booking_id, transaction_id = saved.get("booking_id"), saved.get("transaction_id")
        if booking_id in (None, "") or not transaction_id:
            raise ProviderError("Kiwi saved the booking without a booking id")
        return HeldOrder(order_id=str(booking_id), price=price, token=str(transaction_id))

    async def check_hold(self, booking: Booking) -> HeldOrder | None:
        """Kiwi keeps a saved booking for its payment confirmation only 30 minutes: after that
        a new payment link could only end in a refund, so the fare counts as gone."""
        if not booking.provider_order_id:
            return None
        if datetime.now(UTC) - booking.created_at >= KIWI_CONFIRM_WINDOW:
            raise FareUnavailableError("Kiwi no longer holds the saved booking")
        return None

    async def ticket(
        self,
        booking: Booking,
        *,
        max_total: Money | None = None,
        journal: OrderJournal | None = None,
    ) -> Ticket:
        """confirm_payment of the booking saved at Pay (``hold``), which pays Kiwi from our
        deposit; without one, check_flights (the final total, compared with ``max_total``
        before anything is bought) and save_booking first.

        Tequila has no idempotency key and no lookup we can rely on, so the saved booking is
        written to ``journal`` before confirm_payment: an attempt that finds one there cannot
        know whether that payment went through, and leaves the booking to a person instead of
        buying a second ticket. An attempt that died before confirm_payment left only an
        unpaid Kiwi booking, which Kiwi releases by itself."""
        itinerary = booking.itinerary
        if itinerary.provider != KIWI or not itinerary.booking_token:
            raise TicketingError("this booking is not for a Kiwi fare")
        if journal is not None and journal.previous:
            earlier = journal.previous.split(":", 1)[0]
            log.warning("Kiwi booking %s: an earlier attempt may have paid it", earlier)
            return Ticket(provider_booking_id=earlier, needs_manual_action=True)
        if booking.provider_order_id and booking.provider_order_token:
            # Saved at Pay, at the booking's amount (hold checked the price then).
            return await self._confirm(
                booking.provider_order_id,
                booking.provider_order_token,
                journal=journal,
                total=booking.amount,
            )
        passengers = booking.passengers
        try:
            checked = await self._check_flights(itinerary, passengers)
        except _ExpiredError as exc:
            raise TicketingError("the offer expired before it could be ticketed") from exc
        except ProviderError as exc:
            raise TicketingError(f"the price check before ticketing failed: {exc}") from exc
        if checked.get("flights_invalid"):
            raise TicketingError("the flights are no longer available")
        try:
            total = _checked_price(checked, itinerary.price)
        except ProviderError as exc:
            raise TicketingError(str(exc)) from exc
        if max_total is not None and total.currency == max_total.currency and total > max_total:
            raise FareIncreasedError(total)
        status, saved = await self._save(booking, checked)
        if status in (401, 403):
            log.warning("Kiwi save_booking not allowed for this account (HTTP %d)", status)
            return Ticket(provider_booking_id="", needs_manual_action=True)
        if status != 200:
            raise TicketingError(f"Kiwi refused the booking (HTTP {status}): {_message(saved)}")
        booking_id = saved.get("booking_id")
        transaction_id = saved.get("transaction_id")
        if booking_id in (None, "") or not transaction_id:
            raise TicketingError("Kiwi saved the booking without a booking id")
        return await self._confirm(
            str(booking_id), str(transaction_id), journal=journal, total=total
        )

    async def _save(self, booking: Booking, checked: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "passengers": [
                _passenger(t, deposit_email=self._deposit_email if i == 0 else None)
                for i, t in enumerate(booking.travellers)
            ],
            "booking_token": checked.get("booking_token") or booking.itinerary.booking_token,
            "session_id": str(checked.get("session_id") or ""),
            "baggage": _free_baggage(checked, booking.travellers),
            "lang": self._lang,
            "locale": self._locale,
            # Only what the traveller agreed to; the bot asks no health declaration.
            "health_declaration_checked": self._health_declaration_agreed,
        }
        # Deposit partners pay Kiwi from their deposit: no card gateway (no payment_gateway).
        try:
            return await self._post("/v2/booking/save_booking", body)
        except TicketingError as exc:
            raise ProviderUnavailableError(
                "Kiwi did not answer the booking request: try again in a minute."
            ) from exc

    async def _confirm(
        self,
        booking_id: str,
        transaction_id: str,
        *,
        journal: OrderJournal | None,
        total: Money | None,
    ) -> Ticket:
        # From here on an unanswered or failed request may still have paid Kiwi from our
        # deposit and issued the tickets: refunding the traveller then would lose the fare, so
        # a person checks the booking instead. Only a clear refusal means nothing was paid.
        if journal is not None:
            await journal.record(f"{booking_id}:{transaction_id}")
        unknown = Ticket(provider_booking_id=booking_id, needs_manual_action=True, total=total)
        number: int | str = int(booking_id) if booking_id.isdigit() else booking_id
        try:
            status, confirmed = await self._post(
                "/v2/booking/confirm_payment",
                {"booking_id": number, "transaction_id": transaction_id},
            )
        except TicketingError:
            log.warning("Kiwi booking %s: payment confirmation unanswered", booking_id)
            return unknown
        if status >= 500:
            log.warning("Kiwi booking %s: payment confirmation got HTTP %d", booking_id, status)
            return unknown
        if status != 200 or confirmed.get("status") != 0:
            raise TicketingError(
                f"Kiwi did not confirm the payment (HTTP {status}): {_message(confirmed)}"
            )
        return Ticket(provider_booking_id=booking_id, total=total)

    # HTTP ------------------------------------------------------------------------------------
    async def _get(
        self, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        self.breaker.check()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=self._retry.wait,
                retry=retry_if_exception(self._retry.worth_retrying),
                reraise=True,
            ):
                with attempt:
                    body = await self._get_once(path, params)
        except RetryableError as exc:
            self.breaker.failure()
            log.warning("Kiwi %s unavailable after retries: %s", path, exc.reason)
            raise ProviderUnavailableError(_UNAVAILABLE, retry_after=exc.retry_after) from exc
        except TimeoutError as exc:
            self.breaker.failure()
            log.warning("Kiwi %s timed out after %.1f s", path, self._timeout)
            raise ProviderUnavailableError(_UNAVAILABLE) from exc
        except ProviderError:
            self.breaker.success()  # Kiwi answered: it is up, the request was the problem
            raise
        self.breaker.success()
        return body

    async def _get_once(
        self, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        session = await self._client()
        url = f"{self._base_url}{path}"
        try:
            async with session.get(
                url,
                params=params,
                headers={"apikey": self._api_key},
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                body = await _json(response)
        except aiohttp.ClientConnectionError as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise TimeoutError(str(exc)) from exc
            raise RetryableError(f"connection: {exc.__class__.__name__}") from exc
        except aiohttp.ClientPayloadError as exc:
            raise RetryableError("truncated response") from exc
        if status == 429 or status >= 500:
            raise RetryableError(f"HTTP {status}", retry_after)
        if status in (401, 403):
            raise ProviderError(
                f"Kiwi refused our API key (HTTP {status}); the bot's Kiwi access needs checking."
            )
        if status >= 400:
            raise ProviderError(f"Kiwi rejected the request (HTTP {status}): {_message(body)}")
        if body is None:
            raise RetryableError("response is not JSON")
        return body

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One attempt, never retried; transport failures become ``TicketingError``."""
        self.breaker.check()
        session = await self._client()
        try:
            async with session.post(
                f"{self._base_url}{path}",
                json=body,
                headers={"apikey": self._api_key},
                timeout=aiohttp.ClientTimeout(total=self._timeout * 3),
            ) as response:
                status = response.status
                data = await _json(response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Kiwi %s failed: %s", path, exc.__class__.__name__)
            raise TicketingError(f"Kiwi did not answer {path}") from exc
        log.info("Kiwi %s answered HTTP %d", path, status)
        return status, data or {}


class _ExpiredError(ProviderError):
    """The booking token is too old (Kiwi keeps them about 30 minutes)."""


# mapping helpers -------------------------------------------------------------------------------
def _kiwi_date(day: Any) -> str:
    return f"{day:%d/%m/%Y}"


def _utc(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _MalformedError("time is not a string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _MalformedError(f"bad time {value[:40]!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _MalformedError(f"{field} is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise _MalformedError(f"{field} is not a number") from exc
    if not number.is_finite():
        raise _MalformedError(f"{field} is not a number")
    return number


def _baggage(item: dict[str, Any], currency: str) -> Baggage | None:
    limits = item.get("baglimit")
    prices = item.get("bags_price")
    hand = limits.get("hand_weight") if isinstance(limits, dict) else None
    hold = limits.get("hold_weight") if isinstance(limits, dict) else None
    first_bag: Money | None = None
    if isinstance(prices, dict) and prices.get("1") is not None:
        try:
            first_bag = Money.from_decimal(_decimal(prices["1"], "bags_price"), currency)
        except ValueError:
            first_bag = None
    hand_kg = int(hand) if isinstance(hand, int | float) and hand > 0 else None
    hold_kg = int(hold) if isinstance(hold, int | float) and hold > 0 else None
    if hand_kg is None and hold_kg is None and first_bag is None:
        return None
    return Baggage(hand_kg=hand_kg, hold_kg=hold_kg, first_hold_bag=first_bag)


def _checked_price(checked: dict[str, Any], shown: Money) -> Money:
    """The confirmed total in the shown currency (Tequila's ``total`` is always EUR)."""
    conversion = checked.get("conversion")
    if isinstance(conversion, dict) and str(conversion.get("currency", "")).upper() == (
        shown.currency
    ):
        try:
            return Money.from_decimal(_decimal(conversion.get("amount"), "amount"), shown.currency)
        except ValueError:
            pass
    if shown.currency == "EUR" and checked.get("total") is not None:
        try:
            return Money.from_decimal(_decimal(checked["total"], "total"), "EUR")
        except ValueError:
            pass
    if not checked.get("price_change"):
        return shown
    raise ProviderError("Kiwi changed the price but did not say the new one in our currency")


def _passenger(traveller: Traveller, *, deposit_email: str | None = None) -> dict[str, Any]:
    """One passenger as save_booking takes it: title in title case ("Mr"/"Ms"), the phone in
    E.164 (+ and 8 to 15 digits), and on the lead passenger of a deposit partner the deposit
    account's email, where Kiwi sends the booking."""
    passenger: dict[str, Any] = {
        "name": traveller.first_name,
        "surname": traveller.last_name,
        "birthday": traveller.birth_date.isoformat(),
        "nationality": traveller.nationality,
        "title": "Mr" if traveller.gender.value == "M" else "Ms",
        "cardno": traveller.passport_number,
        "expiration": traveller.passport_expiry.isoformat(),
        "category": traveller.category.value,
    }
    email = deposit_email or traveller.email
    if email:
        passenger["email"] = email
    phone = e164(traveller.phone)
    if phone:
        passenger["phone"] = phone
    return passenger


def _booking_locale(locale: str) -> str:
    """A language-region locale ("en-US") from a language or a locale."""
    language, _, region = locale.replace("_", "-").partition("-")
    language = language.lower() or "en"
    region = region.upper() or {"en": "US"}.get(language, language.upper())
    return f"{language}-{region}"


def _free_baggage(checked: dict[str, Any], travellers: Sequence[Traveller]) -> list[dict[str, Any]]:
    """Per traveller, the cheapest hand-bag combination and a free hold-bag one if there is.

    Kiwi wants the baggage list even for bags that cost nothing; we never buy extra bags here.
    """
    baggage = checked.get("baggage")
    combinations = baggage.get("combinations") if isinstance(baggage, dict) else None
    if not isinstance(combinations, dict):
        return []
    chosen: list[dict[str, Any]] = []
    for kind in ("hand_bag", "hold_bag"):
        options = combinations.get(kind)
        if not isinstance(options, list):
            continue
        by_combination: dict[int, list[int]] = {}
        for index, traveller in enumerate(travellers):
            fitting = [
                (_price_of(option), position)
                for position, option in enumerate(options)
                if isinstance(option, dict) and _fits(option, traveller.category.value)
            ]
            if kind == "hold_bag":
                fitting = [pair for pair in fitting if pair[0] == 0]
            if fitting:
                by_combination.setdefault(min(fitting)[1], []).append(index)
        chosen += [
            {"combination": options[position], "passengers": indices}
            for position, indices in by_combination.items()
        ]
    return chosen


def _fits(combination: dict[str, Any], group: str) -> bool:
    conditions = combination.get("conditions")
    groups = conditions.get("passenger_groups") if isinstance(conditions, dict) else None
    return not isinstance(groups, list) or not groups or group in groups


def _price_of(combination: dict[str, Any]) -> float:
    price = combination.get("price")
    amount = price.get("amount") if isinstance(price, dict) else None
    return float(amount) if isinstance(amount, int | float) else 0.0


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
    try:
        data = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return None
    return data if isinstance(data, dict) else None


def _message(body: dict[str, Any] | None) -> str:
    """Kiwi's own error text, short, for logs and admin alerts (never passenger data)."""
    if not body:
        return "no details"
    for key in ("message", "error", "msg", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value[:200]
    return "no details"


# booking-status notifications (Kiwi's PUSH API, webhooks 2.0) --------------------------------
# Kiwi POSTs a JSON notice per status change and repeats it every 5 minutes until it gets a
# 200; it asks receivers not to validate strictly (new attributes, new triggers). It does not
# sign them: the endpoint's URL carries a secret of ours instead (KIWI_WEBHOOK_SECRET).
_KIWI_CANCELLED = frozenset({"cancelled", "sold_out", "technical_issue", "security_issue"})
_KIWI_CHANGED = frozenset({"delayed", "flight_change_pricing_ready", "schedule_change"})
_KIWI_TICKETED = frozenset({"confirmed", "bp_sent"})


class MalformedNotificationError(ValueError):
    """A Kiwi notification without a booking id or a status (answered 400)."""


def parse_notification(body: bytes) -> ProviderEvent | None:
    """A Kiwi booking-status notice as a ``ProviderEvent``, read leniently: the booking id
    (``bid`` or ``booking_id``) and the ``status``; the notice has no id of its own, so the
    same notice delivered again has the same digest as its id."""
    try:
        notice = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedNotificationError("not JSON") from exc
    if not isinstance(notice, dict):
        raise MalformedNotificationError("not a Kiwi notification")
    raw_data = notice.get("data")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    booking_id = next(
        (v for v in (notice.get("bid"), notice.get("booking_id"), data.get("bid")) if v), None
    )
    status = notice.get("status") or data.get("status")
    if isinstance(booking_id, bool) or not isinstance(booking_id, int | str) or not booking_id:
        raise MalformedNotificationError("a Kiwi notification without a booking id")
    if not isinstance(status, str) or not status:
        raise MalformedNotificationError("a Kiwi notification without a status")
    status = status.strip().lower()
    kind: ProviderEventKind
    if status in _KIWI_CANCELLED:
        kind, summary = "airline_cancelled", "Kiwi.com could not keep your booking."
    elif status in _KIWI_CHANGED:
        kind, summary = "schedule_changed", f"Kiwi.com reports a change to your flight ({status})."
    elif status in _KIWI_TICKETED:
        kind, summary = "ticketed", ""
    else:
        kind, summary = "other", ""
    digest = hashlib.sha256(body).hexdigest()[:32]
    return ProviderEvent(
        id=digest, type=f"kiwi.{status[:40]}", kind=kind, order_id=str(booking_id), summary=summary
    )
