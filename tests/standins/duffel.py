"""A local stand-in for Duffel's API on 127.0.0.1, for the Duffel adapter and booking tests.

Shapes follow Duffel's v2 reference: ``{"data": ...}`` envelopes, offers with slices, segments
(wall-clock ``departing_at`` plus the airport's ``time_zone``), passengers with ids, baggages,
``conditions`` and ``payment_requirements``; hold orders with ``payment_status``; payments from
the balance; order cancellations quoted then confirmed; errors as
``{"errors": [{"type", "code", "title", "message", "documentation_url", "source"}], "meta"}``
(422 validation errors name the field by its JSON pointer; 429 carries ``ratelimit-*``
headers). Every request needs ``Authorization: Bearer <token>`` and ``Duffel-Version: v2``.

The airline is Duffel Airways (ZZ), as in Duffel's test mode. Switches make it misbehave the
ways the real one does: an offer expired or sold out, a price changed (on the offer, or on a
held order whose price guarantee ran out), rate limits, 5xx. Webhooks are delivered to a
registered URL signed as Duffel signs them (``X-Duffel-Signature: t=...,v1=<hex HMAC>``), at
least once.

Run it alone with ``python -m tests.standins.duffel [port]``: it prints the base URL, the token
and the webhook secret to use (``DUFFEL_BASE_URL``, ``DUFFEL_ACCESS_TOKEN``,
``DUFFEL_WEBHOOK_SECRET``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import secrets
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from services.flights.duffel import sign
from services.flights.places import PlaceIndex, airport_distance_km
from services.models import Airport

TOKEN = "duffel_test_standin_token"
WEBHOOK_SECRET = "standin-webhook-secret"
_DOCS = "https://duffel.com/docs/api/overview/errors"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _id(prefix: str, *parts: object) -> str:
    digest = hashlib.blake2b(
        "|".join(map(str, (prefix, *parts))).encode(), digest_size=11
    ).hexdigest()
    return f"{prefix}_0000{digest[:18]}"


@dataclass
class DuffelStandIn:
    """Switches (set them between requests):

    - ``offer_ttl``: how long a new offer lives (Duffel's are short);
    - ``holdable``: whether new offers can be held (``requires_instant_payment`` false);
    - ``refundable``: whether new offers are refundable, ``refund_penalty`` kept on a refund;
    - ``hold_for``: how long a hold order keeps the seats unpaid;
    - ``fail_with``: statuses for the next requests, one per request (e.g. ``[500, 429]``);
    - ``delay``: seconds to wait before answering;
    - ``hold``: paths whose requests are held (after their effect, before the answer) until
      ``release()``; ``held`` is set when one arrives. A test kills the client meanwhile;
    - per offer or order: ``expire_offer``, ``sell_out``, ``change_offer_price``,
      ``change_order_price`` (the airline re-prices a hold after its guarantee).
    """

    token: str = TOKEN
    webhook_secret: str = WEBHOOK_SECRET
    offer_ttl: timedelta = timedelta(hours=2)
    holdable: bool = True
    refundable: bool = True
    refund_penalty: Decimal = Decimal("0")
    hold_for: timedelta = timedelta(days=2)
    currency: str = "EUR"
    fail_with: list[int] = field(default_factory=list)
    delay: float = 0.0
    webhook_url: str | None = None
    hold: set[str] = field(default_factory=set)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    requests: Counter[str] = field(default_factory=Counter)
    offers: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancellations: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: list[dict[str, Any]] = field(default_factory=list)
    order_bodies: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[tuple[str, int]] = field(default_factory=list)  # (event type, HTTP status)
    _sold_out: set[str] = field(default_factory=set)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _bodies: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    base_url: str = ""

    # lifecycle -------------------------------------------------------------------------------
    async def start(self, port: int = 0) -> str:
        app = web.Application(middlewares=[self._gate])
        app.router.add_post("/air/offer_requests", self._offer_request)
        app.router.add_get("/air/offers/{id}", self._get_offer)
        app.router.add_post("/air/orders", self._create_order)
        app.router.add_get("/air/orders/{id}", self._get_order)
        app.router.add_post("/air/payments", self._pay)
        app.router.add_post("/air/order_cancellations", self._quote_cancellation)
        app.router.add_post(
            "/air/order_cancellations/{id}/actions/confirm", self._confirm_cancellation
        )
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{bound}"
        return self.base_url

    async def close(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def release(self) -> None:
        """Answer the held requests and hold no more."""
        self.hold.clear()
        self._released.set()

    @property
    def places(self) -> PlaceIndex:
        return PlaceIndex.default()

    # switches --------------------------------------------------------------------------------
    def expire_offer(self, offer_id: str) -> None:
        self.offers[offer_id]["expires_at"] = _iso(datetime.now(UTC) - timedelta(minutes=1))

    def sell_out(self, offer_id: str) -> None:
        self._sold_out.add(offer_id)

    def change_offer_price(self, offer_id: str, total: str) -> None:
        _set_total(self.offers[offer_id], Decimal(total))

    def change_order_price(self, order_id: str, total: str) -> None:
        """The price guarantee of a hold ran out and the airline asks another price."""
        order = self.orders[order_id]
        _set_total(order, Decimal(total))
        order["payment_status"]["price_guarantee_expires_at"] = _iso(
            datetime.now(UTC) - timedelta(minutes=1)
        )

    def only_offer(self) -> dict[str, Any]:
        """The offer most recently made (the one a single-result test books)."""
        return list(self.offers.values())[-1]

    def only_order(self) -> dict[str, Any]:
        return list(self.orders.values())[-1]

    # middleware ------------------------------------------------------------------------------
    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        self.requests[f"{request.method} {resource.canonical if resource else request.path}"] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "authentication_error", "invalid_token", "The token is invalid")
        if request.headers.get("Duffel-Version") != "v2":
            return _error(
                400,
                "invalid_request_error",
                "unsupported_version",
                "The Duffel-Version header is missing or unsupported",
            )
        if self.fail_with:
            status = self.fail_with.pop(0)
            if status == 429:
                reset = datetime.now(UTC) + timedelta(seconds=1)
                return _error(
                    429,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    "Too many requests: wait until the limit resets",
                    headers={
                        "ratelimit-limit": "60",
                        "ratelimit-remaining": "0",
                        "ratelimit-reset": format_datetime(reset, usegmt=True),
                    },
                )
            return _error(status, "api_error", "internal_server_error", "Something went wrong")
        response: web.StreamResponse = await handler(request)
        if request.path in self.hold:
            self.held.set()
            await self._released.wait()
        response.headers["ratelimit-limit"] = "60"
        response.headers["ratelimit-remaining"] = "59"
        response.headers["x-request-id"] = secrets.token_hex(8)
        return response

    # offers ----------------------------------------------------------------------------------
    async def _offer_request(self, request: web.Request) -> web.Response:
        body = await _body(request)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return _validation("data", "/data", "data is required")
        slices = data.get("slices")
        passengers = data.get("passengers")
        if not isinstance(slices, list) or not slices:
            return _validation("slices", "/data/slices", "at least one slice is required")
        if not isinstance(passengers, list) or not passengers:
            return _validation("passengers", "/data/passengers", "passengers are required")
        for index, passenger in enumerate(passengers):
            if not isinstance(passenger, dict) or not (
                passenger.get("type") == "adult" or isinstance(passenger.get("age"), int)
            ):
                return _validation(
                    "passengers",
                    f"/data/passengers/{index}",
                    "each passenger needs a type of adult or an age",
                )
        legs: list[tuple[Airport, Airport, date]] = []
        for index, part in enumerate(slices):
            try:
                origin = self._airport(str(part["origin"]))
                destination = self._airport(str(part["destination"]))
                day = date.fromisoformat(str(part["departure_date"]))
            except (KeyError, TypeError, ValueError):
                return _validation(
                    "slices", f"/data/slices/{index}", "origin, destination and date are required"
                )
            if origin is None or destination is None:
                return _validation(
                    "slices", f"/data/slices/{index}", "origin or destination is not a known place"
                )
            legs.append((origin, destination, day))
        request_id = _id("orq", next(self._counter), time.time_ns())
        pax = [
            {"id": _id("pas", request_id, i), "type": p.get("type"), "age": p.get("age")}
            for i, p in enumerate(passengers)
        ]
        offers = [
            self._offer(request_id, legs, pax, str(data.get("cabin_class") or "economy"), n)
            for n in range(3)
        ]
        for offer in offers:
            self.offers[offer["id"]] = offer
        result = {
            "id": request_id,
            "live_mode": False,
            "cabin_class": data.get("cabin_class"),
            "created_at": _iso(datetime.now(UTC)),
            "slices": slices,
            "passengers": pax,
            "offers": offers,
        }
        return web.json_response({"data": result}, status=201)

    def _airport(self, code: str) -> Airport | None:
        return self.places.airport_of(code.upper())

    def _offer(
        self,
        request_id: str,
        legs: list[tuple[Airport, Airport, date]],
        pax: list[dict[str, Any]],
        cabin: str,
        variant: int,
    ) -> dict[str, Any]:
        offer_id = _id("off", request_id, variant)
        slices = []
        base = Decimal(0)
        for index, (origin, destination, day) in enumerate(legs):
            distance = airport_distance_km(origin, destination)
            minutes = int(distance / 820 * 60) + 40
            departure = datetime.combine(day, datetime.min.time()).replace(
                hour=7 + 4 * variant, minute=15 * (index % 4)
            )
            origin_zone = ZoneInfo(origin.tz)
            dep_aware = departure.replace(tzinfo=origin_zone)
            arr_local = (dep_aware + timedelta(minutes=minutes)).astimezone(
                ZoneInfo(destination.tz)
            )
            segment_id = _id("seg", offer_id, index)
            slices.append(
                {
                    "id": _id("sli", offer_id, index),
                    "origin": _place(origin),
                    "destination": _place(destination),
                    "origin_type": "airport",
                    "destination_type": "airport",
                    "duration": f"PT{minutes // 60}H{minutes % 60}M",
                    "fare_brand_name": ("Basic", "Standard", "Flex")[variant],
                    "conditions": {"change_before_departure": None},
                    "segments": [
                        {
                            "id": segment_id,
                            "origin": _place(origin),
                            "destination": _place(destination),
                            "departing_at": departure.isoformat(timespec="seconds"),
                            "arriving_at": arr_local.replace(tzinfo=None).isoformat(
                                timespec="seconds"
                            ),
                            "duration": f"PT{minutes // 60}H{minutes % 60}M",
                            "marketing_carrier": {"iata_code": "ZZ", "name": "Duffel Airways"},
                            "operating_carrier": {"iata_code": "ZZ", "name": "Duffel Airways"},
                            "marketing_carrier_flight_number": str(100 + variant * 10 + index),
                            "operating_carrier_flight_number": str(100 + variant * 10 + index),
                            "aircraft": {"iata_code": "320", "name": "Airbus A320"},
                            "passengers": [
                                {
                                    "passenger_id": p["id"],
                                    "cabin_class": cabin,
                                    "cabin_class_marketing_name": cabin.title(),
                                    "baggages": [
                                        {"type": "carry_on", "quantity": 1},
                                        {"type": "checked", "quantity": 1 if variant else 0},
                                    ],
                                }
                                for p in pax
                            ],
                        }
                    ],
                }
            )
            base += Decimal(int(40 + distance * 0.06)) * (1 + Decimal(variant) / 4)
        per_person = base.quantize(Decimal("0.01"))
        seats = len([p for p in pax if p.get("type") == "adult" or (p.get("age") or 0) >= 2])
        base_total = per_person * max(seats, 1)
        tax = (base_total * Decimal("0.12")).quantize(Decimal("0.01"))
        refundable = self.refundable and variant > 0
        return {
            "id": offer_id,
            "live_mode": False,
            "partial": False,
            "created_at": _iso(datetime.now(UTC)),
            "updated_at": _iso(datetime.now(UTC)),
            "expires_at": _iso(datetime.now(UTC) + self.offer_ttl),
            "owner": {"iata_code": "ZZ", "name": "Duffel Airways"},
            "base_amount": f"{base_total:.2f}",
            "base_currency": self.currency,
            "tax_amount": f"{tax:.2f}",
            "tax_currency": self.currency,
            "total_amount": f"{base_total + tax:.2f}",
            "total_currency": self.currency,
            "total_emissions_kg": "90",
            "passengers": pax,
            "slices": slices,
            "payment_requirements": {
                "requires_instant_payment": not self.holdable,
                "payment_required_by": (
                    _iso(datetime.now(UTC) + self.hold_for) if self.holdable else None
                ),
                "price_guarantee_expires_at": (
                    _iso(datetime.now(UTC) + self.hold_for) if self.holdable else None
                ),
            },
            "conditions": {
                "refund_before_departure": {
                    "allowed": refundable,
                    "penalty_amount": f"{self.refund_penalty:.2f}" if refundable else None,
                    "penalty_currency": self.currency if refundable else None,
                },
                "change_before_departure": {
                    "allowed": True,
                    "penalty_amount": "25.00",
                    "penalty_currency": self.currency,
                },
            },
            "passenger_identity_documents_required": True,
            "supported_passenger_identity_document_types": ["passport"],
        }

    def _offer_state(self, offer_id: str) -> tuple[dict[str, Any] | None, web.Response | None]:
        offer = self.offers.get(offer_id)
        if offer is None:
            return None, _error(404, "invalid_request_error", "not_found", "Offer not found")
        if offer_id in self._sold_out or datetime.fromisoformat(
            offer["expires_at"].replace("Z", "+00:00")
        ) <= datetime.now(UTC):
            return None, _error(
                422,
                "airline_error",
                "offer_no_longer_available",
                "The requested offer is no longer available, please create a new offer request",
            )
        return offer, None

    async def _get_offer(self, request: web.Request) -> web.Response:
        offer, refusal = self._offer_state(request.match_info["id"])
        if refusal is not None:
            return refusal
        return web.json_response({"data": offer})

    # orders ----------------------------------------------------------------------------------
    async def _create_order(self, request: web.Request) -> web.Response:
        body = await _body(request)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return _validation("data", "/data", "data is required")
        self.order_bodies.append(data)
        kind = data.get("type", "instant")
        if kind not in ("instant", "hold"):
            return _validation("type", "/data/type", "type must be instant or hold")
        selected = data.get("selected_offers")
        if not isinstance(selected, list) or len(selected) != 1:
            return _validation("selected_offers", "/data/selected_offers", "select one offer")
        offer, refusal = self._offer_state(str(selected[0]))
        if refusal is not None:
            return refusal
        assert offer is not None
        if kind == "hold" and offer["payment_requirements"]["requires_instant_payment"]:
            return _error(
                422,
                "validation_error",
                "unsupported_order_type",
                "This offer cannot be held: it requires instant payment",
                source={"field": "type", "pointer": "/data/type"},
            )
        refusal = _check_passengers(offer, data.get("passengers"))
        if refusal is not None:
            return refusal
        if kind == "instant":
            payments = data.get("payments")
            payment = payments[0] if isinstance(payments, list) and payments else None
            if not isinstance(payment, dict) or payment.get("type") != "balance":
                return _validation("payments", "/data/payments", "a balance payment is required")
            if (payment.get("amount"), payment.get("currency")) != (
                offer["total_amount"],
                offer["total_currency"],
            ):
                return _error(
                    422,
                    "validation_error",
                    "price_changed",
                    "The payment amount does not match the offer's total",
                    source={"field": "amount", "pointer": "/data/payments/0/amount"},
                )
        order_id = _id("ord", offer["id"], next(self._counter))
        now = datetime.now(UTC)
        order = {
            "id": order_id,
            "live_mode": False,
            "type": kind,
            "booking_reference": "".join(
                secrets.choice(string.ascii_uppercase + string.digits) for _ in range(6)
            ),
            "created_at": _iso(now),
            "cancelled_at": None,
            "total_amount": offer["total_amount"],
            "total_currency": offer["total_currency"],
            "base_amount": offer["base_amount"],
            "tax_amount": offer["tax_amount"],
            "owner": offer["owner"],
            "slices": offer["slices"],
            "conditions": offer["conditions"],
            "passengers": [
                {k: v for k, v in p.items() if k != "identity_documents"}
                for p in data["passengers"]
            ],
            "metadata": data.get("metadata"),
            "documents": [],
            "available_actions": ["cancel", "change", "update"],
            "payment_status": {
                "awaiting_payment": kind == "hold",
                "payment_required_by": _iso(now + self.hold_for) if kind == "hold" else None,
                "price_guarantee_expires_at": _iso(now + self.hold_for) if kind == "hold" else None,
                "paid_at": None if kind == "hold" else _iso(now),
            },
        }
        if kind == "instant":
            _issue(order)
        self.orders[order_id] = order
        self._sold_out.add(offer["id"])  # an offer is booked once
        return web.json_response({"data": order}, status=201)

    async def _get_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return _error(404, "invalid_request_error", "not_found", "Order not found")
        return web.json_response({"data": order})

    async def _pay(self, request: web.Request) -> web.Response:
        body = await _body(request)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return _validation("data", "/data", "data is required")
        order = self.orders.get(str(data.get("order_id")))
        if order is None:
            return _error(404, "invalid_request_error", "not_found", "Order not found")
        payment = data.get("payment")
        if not isinstance(payment, dict) or payment.get("type") != "balance":
            return _validation("payment", "/data/payment/type", "type must be balance")
        if order["cancelled_at"] or not order["payment_status"]["awaiting_payment"]:
            return _error(
                422, "invalid_state_error", "already_paid", "This order is not awaiting payment"
            )
        if (payment.get("amount"), payment.get("currency")) != (
            order["total_amount"],
            order["total_currency"],
        ):
            return _error(
                422,
                "validation_error",
                "price_changed",
                "The amount does not match the order's current total",
                source={"field": "amount", "pointer": "/data/payment/amount"},
            )
        order["payment_status"].update(awaiting_payment=False, paid_at=_iso(datetime.now(UTC)))
        _issue(order)
        record = {
            "id": _id("pay", order["id"]),
            "amount": payment["amount"],
            "currency": payment["currency"],
            "type": "balance",
            "created_at": _iso(datetime.now(UTC)),
            "live_mode": False,
        }
        self.payments.append(record)
        return web.json_response({"data": record}, status=201)

    # cancellations ---------------------------------------------------------------------------
    async def _quote_cancellation(self, request: web.Request) -> web.Response:
        body = await _body(request)
        data = body.get("data") if isinstance(body, dict) else None
        order = self.orders.get(str((data or {}).get("order_id")))
        if order is None:
            return _error(404, "invalid_request_error", "not_found", "Order not found")
        if order["cancelled_at"]:
            return _error(
                422, "invalid_state_error", "already_cancelled", "The order is already cancelled"
            )
        refund = Decimal(0)
        rule = order["conditions"]["refund_before_departure"]
        if not order["payment_status"]["awaiting_payment"] and rule and rule["allowed"]:
            penalty = Decimal(rule.get("penalty_amount") or "0")
            refund = max(Decimal(order["total_amount"]) - penalty, Decimal(0))
        quote_id = _id("ore", order["id"], next(self._counter))
        quote = {
            "id": quote_id,
            "order_id": order["id"],
            "live_mode": False,
            "refund_amount": f"{refund:.2f}",
            "refund_currency": order["total_currency"],
            "refund_to": "balance",
            "airline_credits": [],
            "created_at": _iso(datetime.now(UTC)),
            "expires_at": _iso(datetime.now(UTC) + timedelta(minutes=15)),
            "confirmed_at": None,
        }
        self.cancellations[quote_id] = quote
        return web.json_response({"data": quote}, status=201)

    async def _confirm_cancellation(self, request: web.Request) -> web.Response:
        quote = self.cancellations.get(request.match_info["id"])
        if quote is None:
            return _error(404, "invalid_request_error", "not_found", "Cancellation not found")
        order = self.orders[quote["order_id"]]
        if order["cancelled_at"]:
            return _error(
                422, "invalid_state_error", "already_cancelled", "The order is already cancelled"
            )
        now = _iso(datetime.now(UTC))
        quote["confirmed_at"] = now
        order["cancelled_at"] = now
        order["available_actions"] = []
        return web.json_response({"data": quote})

    # webhooks --------------------------------------------------------------------------------
    async def deliver(self, event_type: str, subject: dict[str, Any], *, times: int = 1) -> str:
        """Send one event to ``webhook_url``, signed, ``times`` times (at least once)."""
        assert self.webhook_url, "register webhook_url first"
        event_id = _id("wev", event_type, next(self._counter))
        event = {
            "id": event_id,
            "api_version": "v2",
            "type": event_type,
            "data": {"object": subject},
            "live_mode": False,
            "idempotency_key": subject.get("id"),
            "created_at": _iso(datetime.now(UTC)),
            "identity_organisation_id": "org_0000standin",
        }
        body = json.dumps(event).encode()
        self._bodies[event_id] = (event_type, body)
        await self.redeliver(event_id, times=times)
        return event_id

    async def redeliver(self, event_id: str, *, times: int = 1) -> None:
        """Duffel retries an event its webhook did not accept (2xx), with the same id."""
        event_type, body = self._bodies[event_id]
        async with aiohttp.ClientSession() as session:
            for _ in range(times):
                header = sign(self.webhook_secret, body, int(time.time()))
                async with session.post(
                    self.webhook_url or "",
                    data=body,
                    headers={"Content-Type": "application/json", "X-Duffel-Signature": header},
                ) as response:
                    self.deliveries.append((event_type, response.status))

    async def airline_cancels(self, order_id: str, *, times: int = 1) -> str:
        """The airline cancels the flight: an airline-initiated change that removes the slice
        and adds none."""
        order = self.orders[order_id]
        change = {
            "id": _id("aic", order_id, "cancel"),
            "order_id": order_id,
            "removed": order["slices"],
            "added": [],
            "action_taken": None,
            "available_actions": ["accept", "cancel"],
            "created_at": _iso(datetime.now(UTC)),
        }
        return await self.deliver("order.airline_initiated_change_detected", change, times=times)

    async def schedule_change(self, order_id: str, *, minutes: int = 95) -> str:
        order = self.orders[order_id]
        added = json.loads(json.dumps(order["slices"]))
        for part in added:
            for segment in part["segments"]:
                for key in ("departing_at", "arriving_at"):
                    moment = datetime.fromisoformat(segment[key]) + timedelta(minutes=minutes)
                    segment[key] = moment.isoformat(timespec="seconds")
        change = {
            "id": _id("aic", order_id, "retime", minutes),
            "order_id": order_id,
            "removed": order["slices"],
            "added": added,
            "action_taken": None,
            "available_actions": ["accept", "cancel", "change"],
            "created_at": _iso(datetime.now(UTC)),
        }
        return await self.deliver("order.airline_initiated_change_detected", change)


def _set_total(obj: dict[str, Any], total: Decimal) -> None:
    obj["total_amount"] = f"{total:.2f}"
    tax = Decimal(obj.get("tax_amount") or "0")
    obj["base_amount"] = f"{total - tax:.2f}"


def _issue(order: dict[str, Any]) -> None:
    order["documents"] = [
        {
            "type": "electronic_ticket",
            "unique_identifier": "".join(secrets.choice(string.digits) for _ in range(13)),
            "passenger_ids": [p["id"]],
        }
        for p in order["passengers"]
    ]


def _place(airport: Airport) -> dict[str, Any]:
    return {
        "type": "airport",
        "iata_code": airport.iata,
        "name": airport.name,
        "city_name": airport.city,
        "iata_country_code": airport.country,
        "time_zone": airport.tz,
        "latitude": airport.lat,
        "longitude": airport.lon,
    }


def _check_passengers(offer: dict[str, Any], passengers: Any) -> web.Response | None:
    """Duffel's validation of an order's passengers: ids from the offer, names, birth date,
    contact (email and an E.164 phone number) and a passport where the offer needs one."""
    if not isinstance(passengers, list) or not passengers:
        return _validation("passengers", "/data/passengers", "passengers are required")
    offered = {p["id"] for p in offer["passengers"]}
    if {p.get("id") for p in passengers if isinstance(p, dict)} != offered:
        return _validation(
            "passengers", "/data/passengers", "every passenger of the offer is needed, once"
        )
    for index, passenger in enumerate(passengers):
        pointer = f"/data/passengers/{index}"
        for key in ("given_name", "family_name", "born_on", "gender", "title", "email"):
            if not passenger.get(key):
                return _validation(key, f"{pointer}/{key}", f"{key} is required")
        phone = passenger.get("phone_number")
        if (
            not isinstance(phone, str)
            or not phone.startswith("+")
            or not (phone[1:].isdigit() and 8 <= len(phone) - 1 <= 15)
        ):
            return _error(
                422,
                "validation_error",
                "invalid_phone_number",
                "phone_number must be in E.164 format, e.g. +442080160509",
                source={"field": "phone_number", "pointer": f"{pointer}/phone_number"},
            )
        documents = passenger.get("identity_documents")
        if not isinstance(documents, list) or not documents:
            return _validation(
                "identity_documents",
                f"{pointer}/identity_documents",
                "a passport is required for this offer",
            )
    return None


def _error(
    status: int,
    kind: str,
    code: str,
    message: str,
    *,
    source: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {
        "type": kind,
        "code": code,
        "title": code.replace("_", " ").capitalize(),
        "message": message,
        "documentation_url": f"{_DOCS}#{code}",
    }
    if source is not None:
        error["source"] = source
    body = {"errors": [error], "meta": {"status": status, "request_id": secrets.token_hex(8)}}
    return web.json_response(body, status=status, headers=headers)


def _validation(field_name: str, pointer: str, message: str) -> web.Response:
    return _error(
        422,
        "validation_error",
        "invalid_request_body" if field_name == "data" else "validation_required",
        message,
        source={"field": field_name, "pointer": pointer},
    )


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


async def _serve(port: int) -> None:
    standin = DuffelStandIn()
    url = await standin.start(port)
    print(f"Duffel stand-in on {url}", flush=True)
    print(f"  DUFFEL_BASE_URL={url}", flush=True)
    print(f"  DUFFEL_ACCESS_TOKEN={standin.token}", flush=True)
    print(f"  DUFFEL_WEBHOOK_SECRET={standin.webhook_secret}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await standin.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(int(sys.argv[1]) if len(sys.argv) > 1 else 8790))
