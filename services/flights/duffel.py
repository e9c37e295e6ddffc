"""Duffel adapter: offer requests, offers, hold orders, payments from balance, cancellations.

Duffel is the flight API a new business can still sign up to (test mode with ``duffel_test_``
tokens and the test airline Duffel Airways, IATA ZZ). Its life cycle maps onto ours: an offer
is re-read (``GET /air/offers/{id}``) for its live price and ``expires_at``; pressing Pay makes
a *hold* order where the offer allows it (``payment_requirements.requires_instant_payment`` is
false), which the airline keeps unpaid until ``payment_required_by``; once the traveller's money
is taken, the order is paid from the Duffel balance (``POST /air/payments``) and the airline's
booking reference and e-tickets come back on the order. An offer that cannot be held is
re-read at ticketing and bought with an *instant* order. Cancelling is a quote
(``POST /air/order_cancellations``) and its confirmation; the refund goes to our balance and is
what the traveller gets back.

HTTP: every request carries ``Authorization: Bearer``, ``Duffel-Version: v2`` and asks for
JSON (compressed). Reads and the offer request (a search: safe to repeat) are retried on 5xx,
429 (waiting for ``ratelimit-reset`` or ``Retry-After`` when it is short) and dropped
connections; a circuit breaker turns an outage into an immediate "unavailable". Writes that
book or pay are never retried: a second attempt could book or pay twice. Errors come as
``{"errors": [{"type", "code", "title", "message", "source"}], "meta": {...}}``.

Times: Duffel's ``departing_at``/``arriving_at`` are the airport's wall-clock time without an
offset; the airport object's ``time_zone`` (IANA) makes them instants.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
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
    ProviderEvent,
    ProviderEventKind,
    ProviderUnavailableError,
    Recheck,
    Ticket,
    TicketingError,
)
from services.flights.breaker import CircuitBreaker
from services.flights.contacts import e164
from services.flights.dates import format_day
from services.flights.retrying import RetryableError, RetryPolicy
from services.models import (
    Baggage,
    Booking,
    Cabin,
    FareConditions,
    Gender,
    Itinerary,
    LocationKind,
    PassengerCategory,
    Passengers,
    SearchQuery,
    Segment,
    Traveller,
)
from services.money import Money, is_currency

log = logging.getLogger(__name__)

DUFFEL = "duffel"
DEFAULT_BASE_URL = "https://api.duffel.com"
API_VERSION = "v2"
TEST_TOKEN_PREFIX = "duffel_test_"  # noqa: S105 - a prefix, not a secret
SIGNATURE_HEADER = "X-Duffel-Signature"
_UNAVAILABLE = "Flight search is unavailable right now: try again in a minute."
# Ages sent for children and infants at search time, before their birth dates are known.
SEARCH_CHILD_AGE = 8
SEARCH_INFANT_AGE = 1

_CABINS = {
    Cabin.ECONOMY: "economy",
    Cabin.PREMIUM_ECONOMY: "premium_economy",
    Cabin.BUSINESS: "business",
    Cabin.FIRST: "first",
}
# Error codes meaning the offer cannot be had any more (sold out, expired, already booked).
_GONE_CODES = frozenset(
    {
        "offer_no_longer_available",
        "offer_expired",
        "offer_request_already_booked",
        "already_booked",
        "not_found",
    }
)
_PRICE_CODES = frozenset({"price_changed", "offer_price_changed"})


class _MalformedError(ValueError):
    """A part of a Duffel response that does not have the documented shape."""


class MalformedWebhookError(ValueError):
    """A verified webhook body that is not a Duffel event (answered 400)."""


class DuffelError(ProviderError):
    """Duffel answered with an error; ``code`` is the first error's code."""

    def __init__(self, message: str, *, status: int, code: str, errors: list[Any]) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.errors = errors


class DuffelProvider(FlightProvider):
    """Duffel over aiohttp. The session is opened on first use and closed by ``close()``."""

    name = DUFFEL
    horizon_days = 330

    def __init__(
        self,
        access_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 20.0,
        attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 4.0,
        max_retry_after: float = 5.0,
        breaker_threshold: int = 5,
        breaker_reset: float = 60.0,
        max_connections: int = 1,
        limit: int = 50,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not access_token:
            raise ValueError("a Duffel access token is required")
        self._token = access_token
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._retry = RetryPolicy(
            backoff=backoff, max_backoff=max_backoff, max_retry_after=max_retry_after
        )
        self._max_connections = max_connections
        self._limit = limit
        self._session = session
        self._owns_session = session is None
        self._now = now
        self.test_mode = access_token.startswith(TEST_TOKEN_PREFIX)
        self.breaker = CircuitBreaker(
            threshold=breaker_threshold, reset_after=breaker_reset, clock=clock
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Duffel-Version": API_VERSION,
                    "Accept": "application/json",
                    "Accept-Encoding": "gzip",
                }
            )
            self._owns_session = True
        return self._session

    # search ----------------------------------------------------------------------------------
    async def search(self, query: SearchQuery) -> list[Itinerary]:
        slices = [
            {
                "origin": _place(query.origin.code, query.origin.kind, query.origin.airports),
                "destination": _place(
                    query.destination.code, query.destination.kind, query.destination.airports
                ),
                "departure_date": query.departure.isoformat(),
            }
        ]
        if query.return_date is not None:
            slices.append(
                {
                    "origin": slices[0]["destination"],
                    "destination": slices[0]["origin"],
                    "departure_date": query.return_date.isoformat(),
                }
            )
        body = {
            "data": {
                "slices": slices,
                "passengers": _search_passengers(query.passengers),
                "cabin_class": _CABINS[query.cabin],
                "max_connections": self._max_connections,
            }
        }
        data = await self._read(
            "POST", "/air/offer_requests", params={"return_offers": "true"}, body=body
        )
        offers = data.get("offers")
        if not isinstance(offers, list):
            raise ProviderUnavailableError("Duffel answered without offers: try again in a minute.")
        itineraries: list[Itinerary] = []
        for offer in offers:
            try:
                itineraries.append(offer_to_itinerary(offer))
            except (_MalformedError, ValueError, KeyError, TypeError) as exc:
                offer_id = offer.get("id") if isinstance(offer, dict) else None
                log.warning(
                    "skipping a malformed Duffel offer (%s): %s", str(offer_id)[:40], str(exc)[:200]
                )
        itineraries.sort(key=lambda i: (i.price.amount, i.departure))
        return itineraries[: self._limit]

    # re-check --------------------------------------------------------------------------------
    async def recheck(self, itinerary: Itinerary, passengers: Passengers) -> Recheck:
        offer = await self._live_offer(itinerary)
        if offer is None:
            return Recheck(available=False, price=itinerary.price)
        price = _money(offer, "total_amount", "total_currency")
        expires = _instant(offer.get("expires_at"))
        if expires is not None and expires <= self._now():
            return Recheck(available=False, price=price, expires_at=expires)
        return Recheck(
            available=True, price=price, booking_token=str(offer["id"]), expires_at=expires
        )

    async def _live_offer(self, itinerary: Itinerary) -> dict[str, Any] | None:
        """The offer as Duffel has it now; None when it is gone (expired, sold, unknown)."""
        offer_id = _offer_id(itinerary)
        try:
            return await self._read("GET", f"/air/offers/{offer_id}")
        except DuffelError as error:
            if error.status in (404, 410) or error.code in _GONE_CODES:
                return None
            raise

    # order before charge -------------------------------------------------------------------------
    async def hold(self, booking: Booking) -> HeldOrder | None:
        offer = await self._bookable_offer(booking)
        requirements = offer.get("payment_requirements")
        instant = not isinstance(requirements, dict) or bool(
            requirements.get("requires_instant_payment", True)
        )
        if instant:
            return None  # Duffel cannot hold it: the order is made (and paid) on ticketing
        body = {
            "data": {
                "type": "hold",
                "selected_offers": [offer["id"]],
                "passengers": _order_passengers(offer, booking.travellers),
                "metadata": {"booking_reference": booking.reference},
            }
        }
        status, data = await self._write_or_unavailable("/air/orders", body)
        if status not in {201, 200}:
            raise self._refusal(status, data, "hold the fare")
        order = _data(data)
        price = _money(order, "total_amount", "total_currency")
        payment = order.get("payment_status")
        until = _instant(payment.get("payment_required_by")) if isinstance(payment, dict) else None
        log.info("Duffel hold order %s for booking %s", order.get("id"), booking.reference)
        return HeldOrder(
            order_id=str(order["id"]),
            price=price,
            payment_required_by=until,
            airline_reference=_text(order.get("booking_reference")),
        )

    async def _bookable_offer(self, booking: Booking) -> dict[str, Any]:
        offer = await self._live_offer(booking.itinerary)
        if offer is None:
            raise FareUnavailableError("the offer is no longer available")
        expires = _instant(offer.get("expires_at"))
        if expires is not None and expires <= self._now():
            raise FareUnavailableError("the offer has expired")
        price = _money(offer, "total_amount", "total_currency")
        if price != booking.amount:
            raise FareChangedError(f"the price is now {price.format()}", price=price)
        return offer

    async def check_hold(self, booking: Booking) -> HeldOrder | None:
        order_id = booking.provider_order_id
        if not order_id:
            return None
        try:
            order = await self._read("GET", f"/air/orders/{order_id}")
        except DuffelError as error:
            raise FareUnavailableError(f"the held order could not be read: {error}") from error
        payment = order.get("payment_status")
        if order.get("cancelled_at") or not isinstance(payment, dict):
            raise FareUnavailableError("the airline released the held order")
        until = _instant(payment.get("payment_required_by"))
        if until is not None and until <= self._now():
            raise FareUnavailableError("the airline's hold on the seats ran out")
        price = _money(order, "total_amount", "total_currency")
        if price != booking.amount:
            raise FareChangedError(f"the held order now costs {price.format()}", price=price)
        return HeldOrder(
            order_id=order_id,
            price=price,
            payment_required_by=until,
            airline_reference=_text(order.get("booking_reference")),
        )

    async def release(self, booking: Booking) -> None:
        if not booking.provider_order_id:
            return
        try:
            quote = await self.quote_cancellation(booking)
            if quote is not None:
                await self.confirm_cancellation(booking, quote)
        except ProviderError as error:
            # The airline lets an unpaid hold go at payment_required_by anyway.
            log.info("Duffel hold %s not released: %s", booking.provider_order_id, error)

    # ticketing -------------------------------------------------------------------------------
    async def ticket(
        self,
        booking: Booking,
        *,
        max_total: Money | None = None,
        journal: OrderJournal | None = None,
    ) -> Ticket:
        """Pay the held order (idempotent: an order found paid is not paid again), or buy an
        instant order, noted in ``journal`` first: an attempt that finds that note cannot know
        whether the order was made, and leaves the booking to a person."""
        if booking.itinerary.provider != DUFFEL:
            raise TicketingError("this booking is not for a Duffel offer")
        ceiling = max_total or booking.amount
        if booking.provider_order_id:
            return await self._pay_held(booking, booking.provider_order_id, ceiling)
        if journal is not None and journal.previous:
            log.warning("Duffel booking %s: an earlier attempt may have ordered", booking.reference)
            return Ticket(provider_booking_id="", needs_manual_action=True)
        if journal is not None:
            await journal.record(f"instant:{booking.reference}")
        return await self._buy_instant(booking, ceiling)

    async def _pay_held(self, booking: Booking, order_id: str, ceiling: Money) -> Ticket:
        try:
            order = await self._read("GET", f"/air/orders/{order_id}")
        except DuffelError as error:
            raise TicketingError(f"the held order could not be read: {error}") from error
        payment = _object(order.get("payment_status"))
        if order.get("cancelled_at"):
            raise TicketingError("the airline released the held order")
        if not payment.get("awaiting_payment", True):
            return _ticket_of(order)  # paid already (a retried fulfilment): nothing to pay again
        until = _instant(payment.get("payment_required_by"))
        if until is not None and until <= self._now():
            raise FareUnavailableError("the airline's hold on the seats ran out")
        price = _money(order, "total_amount", "total_currency")
        if price.currency != ceiling.currency:
            raise FareChangedError(
                f"the airline now asks {price.format()} for the held order", price=None
            )
        if price > ceiling:
            raise FareIncreasedError(price)
        body = {
            "data": {
                "order_id": order_id,
                "payment": {
                    "type": "balance",
                    "amount": _amount_text(price),
                    "currency": price.currency,
                },
            }
        }
        try:
            status, data = await self._write("/air/payments", body)
        except TicketingError:
            log.warning("Duffel payment for order %s unanswered", order_id)
            return Ticket(provider_booking_id=order_id, needs_manual_action=True)
        if status >= 500:
            # It may have gone through: a person checks the order instead of a refund.
            log.warning("Duffel payment for order %s got HTTP %d", order_id, status)
            return Ticket(provider_booking_id=order_id, needs_manual_action=True)
        if status not in (200, 201):
            raise self._refusal(status, data, "pay the held order")
        try:
            paid = await self._read("GET", f"/air/orders/{order_id}")
        except ProviderError:
            return Ticket(provider_booking_id=order_id)
        return _ticket_of(paid)

    async def _buy_instant(self, booking: Booking, ceiling: Money) -> Ticket:
        offer = await self._bookable_offer(booking)
        price = _money(offer, "total_amount", "total_currency")
        if price.currency == ceiling.currency and price > ceiling:
            raise FareIncreasedError(price)
        body = {
            "data": {
                "type": "instant",
                "selected_offers": [offer["id"]],
                "passengers": _order_passengers(offer, booking.travellers),
                "payments": [
                    {"type": "balance", "amount": _amount_text(price), "currency": price.currency}
                ],
                "metadata": {"booking_reference": booking.reference},
            }
        }
        try:
            status, data = await self._write("/air/orders", body)
        except TicketingError:
            return Ticket(provider_booking_id="", needs_manual_action=True)
        if status >= 500:
            log.warning("Duffel instant order for %s got HTTP %d", booking.reference, status)
            return Ticket(provider_booking_id="", needs_manual_action=True)
        if status not in (200, 201):
            raise self._refusal(status, data, "issue the ticket")
        return _ticket_of(_data(data))

    # cancelling ------------------------------------------------------------------------------
    async def quote_cancellation(self, booking: Booking) -> CancellationQuote | None:
        if not booking.provider_order_id:
            return None
        status, data = await self._write_or_unavailable(
            "/air/order_cancellations", {"data": {"order_id": booking.provider_order_id}}
        )
        if status not in (200, 201):
            raise self._refusal(status, data, "quote the cancellation")
        quote = _data(data)
        refund = _refund_in(booking, quote)
        return CancellationQuote(
            quote_id=str(quote["id"]), refund=refund, expires_at=_instant(quote.get("expires_at"))
        )

    async def confirm_cancellation(self, booking: Booking, quote: CancellationQuote) -> Money:
        status, data = await self._write_or_unavailable(
            f"/air/order_cancellations/{quote.quote_id}/actions/confirm", {}
        )
        if status not in (200, 201):
            raise self._refusal(status, data, "cancel the order")
        return _refund_in(booking, _data(data))

    # HTTP ------------------------------------------------------------------------------------
    def _refusal(self, status: int, data: Mapping[str, Any] | None, doing: str) -> ProviderError:
        code, message = _first_error(data)
        if status == 429 or status >= 500:
            return ProviderUnavailableError(
                f"Duffel could not {doing} just now (HTTP {status}): try again in a minute."
            )
        if code in _GONE_CODES:
            return FareUnavailableError(f"Duffel could not {doing}: {message}")
        if code in _PRICE_CODES:
            return FareChangedError(f"Duffel could not {doing}: {message}", price=None)
        return DuffelError(
            f"Duffel could not {doing} (HTTP {status}, {code}): {message}",
            status=status,
            code=code,
            errors=list((data or {}).get("errors") or []),
        )

    async def _read(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A request safe to repeat, retried; returns the response's ``data`` object."""
        self.breaker.check()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=self._retry.wait,
                retry=retry_if_exception(self._retry.worth_retrying),
                reraise=True,
            ):
                with attempt:
                    data = await self._read_once(method, path, params, body)
        except RetryableError as exc:
            self.breaker.failure()
            log.warning("Duffel %s unavailable after retries: %s", path, exc.reason)
            raise ProviderUnavailableError(_UNAVAILABLE, retry_after=exc.retry_after) from exc
        except TimeoutError as exc:
            self.breaker.failure()
            log.warning("Duffel %s timed out after %.1f s", path, self._timeout)
            raise ProviderUnavailableError(_UNAVAILABLE) from exc
        except ProviderError:
            self.breaker.success()
            raise
        self.breaker.success()
        return data

    async def _read_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: dict[str, Any] | None,
    ) -> dict[str, Any]:
        session = await self._client()
        try:
            async with session.request(
                method,
                f"{self._base_url}{path}",
                params=params,
                json=body,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers, self._now())
                payload = await _json(response)
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
                f"Duffel refused our access token (HTTP {status}); DUFFEL_ACCESS_TOKEN needs "
                "checking."
            )
        if status >= 400:
            code, message = _first_error(payload)
            raise DuffelError(
                f"Duffel rejected the request (HTTP {status}, {code}): {message}",
                status=status,
                code=code,
                errors=list((payload or {}).get("errors") or []),
            )
        if payload is None:
            raise RetryableError("response is not JSON")
        return _data(payload)

    async def _write(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One attempt, never retried; transport failures become ``TicketingError``."""
        self.breaker.check()
        session = await self._client()
        try:
            async with session.post(
                f"{self._base_url}{path}",
                json=body,
                timeout=aiohttp.ClientTimeout(total=self._timeout * 3),
            ) as response:
                status = response.status
                payload = await _json(response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Duffel %s failed: %s", path, exc.__class__.__name__)
            raise TicketingError(f"Duffel did not answer {path}") from exc
        log.info("Duffel %s answered HTTP %d", path.split("/actions", maxsplit=1)[0], status)
        return status, payload or {}

    async def _write_or_unavailable(
        self, path: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """A write before any money moves: no answer means "try again", not a refusal."""
        try:
            return await self._write(path, body)
        except TicketingError as exc:
            raise ProviderUnavailableError("Duffel did not answer: try again in a minute.") from exc


# webhooks --------------------------------------------------------------------------------------
def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Duffel-Signature`` value Duffel sends: ``t=<unix time>,v1=<hex HMAC-SHA256 of
    "<t>.<raw body>" keyed with the webhook's secret>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, compared in constant time.

    Duffel retries a delivery for up to 72 hours, so the timestamp's age is not held against
    it; a replayed event is harmless because each event id is applied once."""
    if not header or not secret:
        return False
    parts: dict[str, str] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, value)
    timestamp, given = parts.get("t", ""), parts.get("v1", "")
    if not timestamp.isdigit() or not given:
        return False
    expected = sign(secret, body, int(timestamp)).rpartition("v1=")[2]
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


def parse_event(body: bytes) -> ProviderEvent | None:
    """A verified webhook body as a ``ProviderEvent``; None for events about no order of ours
    (pings, stays). Raises ``MalformedWebhookError`` for a body that is not a Duffel event."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedWebhookError("not JSON") from exc
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise MalformedWebhookError("not a Duffel event")
    kind_name = event.get("type")
    data = event.get("data")
    subject = data.get("object") if isinstance(data, dict) else None
    if not isinstance(kind_name, str) or not isinstance(subject, dict):
        raise MalformedWebhookError("a Duffel event without a type or data.object")
    kind: ProviderEventKind
    if kind_name == "order.airline_initiated_change_detected":
        order_id = subject.get("order_id")
        added = _list(subject.get("added"))
        removed = _list(subject.get("removed"))
        if removed and not added:
            kind, summary = "airline_cancelled", "The airline cancelled your flight."
        else:
            kind, summary = "schedule_changed", _change_summary(added)
    elif kind_name == "order.updated":
        order_id = subject.get("id")
        # Our own cancellation also ends up here: only an airline-initiated change says the
        # airline cancelled, so this one is for a person to look at.
        kind = "order_cancelled" if subject.get("cancelled_at") else "other"
        summary = ""
    elif kind_name.startswith("order."):
        order_id = subject.get("order_id") or subject.get("id")
        kind, summary = "other", ""
    else:
        return None
    if not isinstance(order_id, str) or not order_id:
        raise MalformedWebhookError("a Duffel order event without an order id")
    return ProviderEvent(
        id=event["id"], type=f"duffel.{kind_name}", kind=kind, order_id=order_id, summary=summary
    )


def _change_summary(slices: Sequence[Any]) -> str:
    lines: list[str] = []
    for part in slices:
        segments = part.get("segments") if isinstance(part, dict) else None
        if not isinstance(segments, list):
            continue
        for segment in segments:
            try:
                parsed = _segment(segment, inbound=False)
            except (_MalformedError, KeyError, TypeError, ValueError):
                continue
            lines.append(
                f"{parsed.flight_number} {parsed.origin} {format_day(parsed.departure)} "
                f"{parsed.departure:%H:%M} → {parsed.destination} "
                f"{format_day(parsed.arrival)} {parsed.arrival:%H:%M}"
            )
    if not lines:
        return "The airline changed your flight times."
    return "The airline changed your flight times. New schedule:\n" + "\n".join(lines)


# mapping ---------------------------------------------------------------------------------------
def offer_to_itinerary(offer: Any) -> Itinerary:
    """One Duffel offer as our itinerary (total for all travellers)."""
    if not isinstance(offer, dict) or not isinstance(offer.get("id"), str):
        raise _MalformedError("offer without an id")
    if offer.get("partial"):
        raise _MalformedError("a partial offer cannot be booked on its own")
    slices = offer.get("slices")
    if not isinstance(slices, list) or not slices:
        raise _MalformedError("no slices")
    segments: list[Segment] = []
    for index, part in enumerate(slices):
        parts = part.get("segments") if isinstance(part, dict) else None
        if not isinstance(parts, list) or not parts:
            raise _MalformedError("a slice without segments")
        segments += [_segment(s, inbound=index > 0) for s in parts]
    price = _money(offer, "total_amount", "total_currency")
    if price.amount <= 0:
        raise _MalformedError("price is not positive")
    requirements = offer.get("payment_requirements")
    holdable = (
        not bool(requirements.get("requires_instant_payment", True))
        if isinstance(requirements, dict)
        else None
    )
    digest = hashlib.blake2b(offer["id"].encode(), digest_size=8).hexdigest()
    return Itinerary(
        id=f"duffel-{digest}",
        provider=DUFFEL,
        segments=tuple(segments),
        price=price,
        booking_token=offer["id"],
        baggage=_offer_baggage(slices),
        conditions=_conditions(offer),
        fare_expires_at=_instant(offer.get("expires_at")),
        holdable=holdable,
    )


def _segment(part: Any, *, inbound: bool) -> Segment:
    if not isinstance(part, dict):
        raise _MalformedError("segment is not an object")
    origin = part["origin"]
    destination = part["destination"]
    carrier_obj = part.get("marketing_carrier") or part.get("operating_carrier") or {}
    carrier = str(carrier_obj.get("iata_code") or "").upper()
    number = part.get("marketing_carrier_flight_number") or part.get(
        "operating_carrier_flight_number"
    )
    if not carrier or not number:
        raise _MalformedError("segment without airline or flight number")
    departure = _local(part["departing_at"], origin.get("time_zone"))
    arrival = _local(part["arriving_at"], destination.get("time_zone"))
    if arrival <= departure:
        raise _MalformedError("segment arrives before it departs")
    return Segment(
        carrier=carrier,
        flight_number=f"{carrier}{number}",
        origin=str(origin["iata_code"]),
        destination=str(destination["iata_code"]),
        departure=departure,
        arrival=arrival,
        inbound=inbound,
    )


def _local(value: Any, zone_name: Any) -> datetime:
    if not isinstance(value, str):
        raise _MalformedError("time is not a string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _MalformedError(f"bad time {value[:40]!r}") from exc
    if moment.tzinfo is not None:
        return moment
    try:
        zone = ZoneInfo(str(zone_name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _MalformedError(f"unknown time zone {str(zone_name)[:40]!r}") from exc
    return moment.replace(tzinfo=zone)


def _offer_baggage(slices: list[Any]) -> Baggage | None:
    """The bags the first traveller gets on the first segment (the same fare for everyone)."""
    try:
        passengers = slices[0]["segments"][0].get("passengers") or []
        baggages = passengers[0].get("baggages") or []
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    pieces = {"checked": 0, "carry_on": 0}
    for bag in baggages:
        if isinstance(bag, dict) and bag.get("type") in pieces:
            quantity = bag.get("quantity")
            pieces[bag["type"]] += quantity if isinstance(quantity, int) and quantity > 0 else 0
    return Baggage(hold_pieces=pieces["checked"], hand_pieces=pieces["carry_on"])


def _conditions(offer: dict[str, Any]) -> FareConditions | None:
    conditions = offer.get("conditions")
    if not isinstance(conditions, dict):
        return None
    refund = conditions.get("refund_before_departure")
    change = conditions.get("change_before_departure")
    return FareConditions(
        refundable=bool(refund.get("allowed")) if isinstance(refund, dict) else None,
        refund_penalty=_penalty(refund),
        changeable=bool(change.get("allowed")) if isinstance(change, dict) else None,
        change_penalty=_penalty(change),
    )


def _penalty(condition: Any) -> Money | None:
    if not isinstance(condition, dict) or condition.get("penalty_amount") in (None, ""):
        return None
    try:
        return _money(condition, "penalty_amount", "penalty_currency")
    except (_MalformedError, ValueError):
        return None


def _money(obj: Mapping[str, Any], amount_key: str, currency_key: str) -> Money:
    currency = obj.get(currency_key)
    if not isinstance(currency, str) or not is_currency(currency):
        raise _MalformedError(f"{currency_key} is not a currency")
    raw = obj.get(amount_key)
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise _MalformedError(f"{amount_key} is not an amount")
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise _MalformedError(f"{amount_key} is not an amount") from exc
    if not value.is_finite():
        raise _MalformedError(f"{amount_key} is not an amount")
    return Money.from_decimal(value, currency.upper())


def _amount_text(money: Money) -> str:
    return f"{money.major:.{money.exponent}f}"


def _refund_in(booking: Booking, cancellation: Mapping[str, Any]) -> Money:
    """Duffel's refund in the booking's currency. Duffel refunds in the balance's currency; if
    that is another one, the traveller gets the same share of what they paid."""
    try:
        refund = _money(cancellation, "refund_amount", "refund_currency")
    except _MalformedError:
        return Money.zero(booking.amount.currency)
    if refund.currency == booking.amount.currency:
        return refund if refund <= booking.amount else booking.amount
    order_total = booking.itinerary.price
    if order_total.currency != refund.currency or order_total.amount <= 0:
        return Money.zero(booking.amount.currency)
    share = min(Decimal(refund.amount) / Decimal(order_total.amount), Decimal(1))
    return Money(amount=int(booking.amount.amount * share), currency=booking.amount.currency)


def _ticket_of(order: Mapping[str, Any]) -> Ticket:
    documents = _list(order.get("documents"))
    numbers = tuple(
        str(doc["unique_identifier"])
        for doc in documents
        if isinstance(doc, dict)
        and doc.get("type") == "electronic_ticket"
        and doc.get("unique_identifier")
    )
    try:
        total: Money | None = _money(order, "total_amount", "total_currency")
    except _MalformedError:  # the ticket stands; only the figure for the admins is missing
        total = None
    return Ticket(
        provider_booking_id=str(order.get("id") or ""),
        airline_reference=_text(order.get("booking_reference")),
        ticket_numbers=numbers,
        total=total,
    )


def _place(code: str, kind: LocationKind, airports: tuple[str, ...]) -> str:
    """Duffel takes one IATA code per slice end: an airport or a city (metro) code."""
    if kind is LocationKind.AIRPORT or len(airports) != 1:
        return code
    return airports[0]


def _search_passengers(passengers: Passengers) -> list[dict[str, Any]]:
    return (
        [{"type": "adult"}] * passengers.adults
        + [{"age": SEARCH_CHILD_AGE}] * passengers.children
        + [{"age": SEARCH_INFANT_AGE}] * passengers.infants
    )


def _order_passengers(
    offer: Mapping[str, Any], travellers: Sequence[Traveller]
) -> list[dict[str, Any]]:
    """Our travellers on the offer's passenger ids, adults first; each infant on an adult's
    lap. Duffel wants a contact on each passenger: the lead's when a traveller gave none."""
    offered = [p for p in offer.get("passengers") or [] if isinstance(p, dict) and p.get("id")]
    adults = [p for p in offered if p.get("type") == "adult" or _is_age(p, 18, 200)]
    young = [p for p in offered if p not in adults]
    children = [p for p in young if _is_age(p, 2, 17) or p.get("type") == "child"]
    infants = [p for p in young if p not in children]
    pools = {
        PassengerCategory.ADULT: adults,
        PassengerCategory.CHILD: children,
        PassengerCategory.INFANT: infants,
    }
    email = next((t.email for t in travellers if t.email), None)
    phone = next((t.phone for t in travellers if t.phone), None)
    chosen: list[dict[str, Any]] = []
    adult_ids: list[dict[str, Any]] = []
    for traveller in travellers:
        pool = pools[traveller.category]
        if not pool:
            raise FareUnavailableError("the offer is for other travellers than the booking")
        passenger_id = str(pool.pop(0)["id"])
        entry: dict[str, Any] = {
            "id": passenger_id,
            "title": "mr" if traveller.gender is Gender.MALE else "ms",
            "gender": "m" if traveller.gender is Gender.MALE else "f",
            "given_name": traveller.first_name,
            "family_name": traveller.last_name,
            "born_on": traveller.birth_date.isoformat(),
            "email": traveller.email or email,
            "phone_number": e164(traveller.phone or phone),
            "identity_documents": [
                {
                    "type": "passport",
                    "unique_identifier": traveller.passport_number,
                    "issuing_country_code": traveller.nationality,
                    "expires_on": traveller.passport_expiry.isoformat(),
                }
            ],
        }
        chosen.append(entry)
        if traveller.category is PassengerCategory.ADULT:
            adult_ids.append(entry)
    laps = iter(adult_ids)
    for traveller, entry in zip(travellers, chosen, strict=True):
        if traveller.category is PassengerCategory.INFANT:
            lap = next(laps, None)
            if lap is not None:
                lap["infant_passenger_id"] = entry["id"]
    return chosen


def _is_age(passenger: Mapping[str, Any], low: int, high: int) -> bool:
    age = passenger.get("age")
    return isinstance(age, int) and low <= age <= high


def _offer_id(itinerary: Itinerary) -> str:
    token = itinerary.booking_token
    if itinerary.provider != DUFFEL or not token or not token.isascii() or "/" in token:
        raise FareUnavailableError("this itinerary is not a Duffel offer")
    return token


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _data(payload: Mapping[str, Any]) -> dict[str, Any]:
    data = payload.get("data")
    if not isinstance(data, dict):
        raise _MalformedError("response without a data object")
    return data


def _first_error(payload: Mapping[str, Any] | None) -> tuple[str, str]:
    """The first error's code and message, short, for logs and admin alerts."""
    errors = (payload or {}).get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        code = str(first.get("code") or first.get("type") or "unknown")[:60]
        message = str(first.get("message") or first.get("title") or "no details")[:200]
        return code, message
    return "unknown", "no details"


def _retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait: ``Retry-After``, else until ``ratelimit-reset`` (an HTTP date)."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    reset = headers.get("ratelimit-reset")
    if reset:
        try:
            moment = parsedate_to_datetime(reset)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, (moment - now).total_seconds())
    return None


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
    try:
        data = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return None
    return data if isinstance(data, dict) else None
