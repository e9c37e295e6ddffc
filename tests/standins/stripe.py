"""A local, stateful Stripe for tests: the slice of API v1 the bot uses, on loopback.

stripe-python talks to it through ``base_addresses={"api": standin.base_url}``. It parses the
form bodies stripe-python sends (``line_items[0][price_data][currency]=eur``), validates them
the way Stripe does, keeps sessions, payment intents, charges and refunds, honours
``Idempotency-Key`` and answers in Stripe's JSON shapes and error format.

Test controls stand in for what happens on Stripe's side: a customer paying
(``complete_session``), a session reaching its ``expires_at`` (``expire_session``), and Stripe
sending webhooks (``deliver`` and friends, signed like Stripe signs them).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

API_VERSION = "2026-06-24.dahlia"

THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
# A few of Stripe's minimum charge amounts (in Stripe's units); others just need to be positive.
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "chf": 50, "jpy": 50, "cad": 50, "aud": 50}
_CURRENCY_CODES = (
    "usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd "
    "bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp "
    "gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw "
    "kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad "
    "ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek "
    "sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah ugx uyu uzs vnd vuv wst "
    "xaf xcd xof xpf yer zar zmw"
)
SUPPORTED_CURRENCIES = frozenset(_CURRENCY_CODES.split())
SESSION_PARAMS = frozenset(
    {
        "mode",
        "line_items",
        "client_reference_id",
        "metadata",
        "payment_intent_data",
        "expires_at",
        "success_url",
        "cancel_url",
        "customer_email",
        "customer",
        "currency",
        "locale",
        "ui_mode",
        "payment_method_types",
        "submit_type",
        "allow_promotion_codes",
        "expand",
    }
)
REFUND_PARAMS = frozenset(
    {"payment_intent", "charge", "amount", "reason", "metadata", "expand", "instructions_email"}
)
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
_KEY_PART = re.compile(r"\[([^\[\]]*)\]")
_KEY_PATH = re.compile(r"(?:\[[^\[\]]*\])+")


class StripeRequestError(Exception):
    """Answered as Stripe's error JSON with the given status."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
        executed: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.error_type = error_type
        # Raised once the endpoint ran (not by parameter validation): Stripe saves such an
        # answer under the request's idempotency key and replays it for that key.
        self.executed = executed

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.param:
            error["param"] = self.param
        if self.code:
            error["code"] = self.code
        return {"error": error}


@dataclass(frozen=True)
class RecordedRequest:
    """One API call as the stand-in received it (params already un-bracketed)."""

    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    status: int
    replayed: bool


_Action = Callable[[web.Request, dict[str, Any]], dict[str, Any]]


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(18).replace('-', 'x').replace('_', 'y')}"


def parse_form(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket syntax into nested dicts and lists: ``a[b][0][c]=1``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, bracket, rest = key.partition("[")
        rest = bracket + rest
        if not head or (rest and not _KEY_PATH.fullmatch(rest)):
            raise StripeRequestError(
                f"Invalid parameter name: {key}. Keys cannot contain '[' or ']' except as "
                "nesting brackets.",
                param=key,
            )
        parts = [head, *_KEY_PART.findall(rest)]
        node: dict[str, Any] = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise StripeRequestError(f"Invalid parameter: {key}", param=key)
            node = child
        node[parts[-1]] = value
    return _lists(root)  # type: ignore[no-any-return]


def _lists(node: Any) -> Any:
    """Dicts whose keys are 0..n-1 become lists (stripe-python always indexes arrays)."""
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        keys = sorted(converted, key=int)
        if [int(k) for k in keys] == list(range(len(keys))):
            return [converted[k] for k in keys]
    return converted


def _int_param(value: Any, param: str, *, minimum: int | None = None) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise StripeRequestError(
            f"Invalid integer: {value}", param=param, code="parameter_invalid_integer"
        )
    number = int(value)
    if minimum is not None and number < minimum:
        raise StripeRequestError(
            f"This value must be greater than or equal to {minimum}.",
            param=param,
            code="parameter_invalid_integer",
        )
    return number


def _check_metadata(value: Any, param: str) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise StripeRequestError("Invalid object", param=param)
    if len(value) > 50:
        raise StripeRequestError("Metadata can have up to 50 keys.", param=param)
    for key, item in value.items():
        if len(key) > 40 or "[" in key or "]" in key:
            raise StripeRequestError(
                "Metadata keys can be up to 40 characters long and cannot contain '[' or ']'.",
                param=f"{param}[{key}]",
            )
        if not isinstance(item, str) or len(item) > 500:
            raise StripeRequestError(
                "Metadata values can have up to 500 characters.", param=f"{param}[{key}]"
            )
    return dict(value)


def _check_url(value: Any, param: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise StripeRequestError("Not a valid URL", param=param, code="url_invalid")
    return value


def _check_currency(value: Any, param: str) -> str:
    if not isinstance(value, str) or value.lower() not in SUPPORTED_CURRENCIES:
        raise StripeRequestError(
            f"Invalid currency: {value}. Stripe currently supports these currencies: ...",
            param=param,
        )
    return value.lower()


def _check_amount_for_currency(amount: int, currency: str, param: str) -> None:
    code = currency.upper()
    if code == "ISK" and amount % 100:
        raise StripeRequestError(
            "ISK amounts must be a multiple of 100 (whole krónur).", param=param
        )
    if code in THREE_DECIMAL and amount % 10:
        raise StripeRequestError(
            f"{code} amounts must end in 0: Stripe rounds three-decimal currencies to tens.",
            param=param,
        )


def _fingerprint(method: str, path: str, params: Mapping[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps([method, path, params], sort_keys=True).encode("utf-8")
    ).hexdigest()


class StripeStandin:
    """A local Stripe. ``async with StripeStandin() as stripe_api: ... stripe_api.base_url``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.api_key = api_key or f"sk_test_standin{secrets.token_hex(8)}"
        self.webhook_secret = webhook_secret or f"whsec_standin{secrets.token_hex(12)}"
        self.sessions: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.events: list[dict[str, Any]] = []  # every event Stripe would have sent, in order
        # "POST /v1/refunds": how many of the next such calls Stripe answers 500 (an outage
        # in front of the API: nothing is done and nothing is stored under the key).
        self.outages: Counter[str] = Counter()
        self.clock_offset = 0.0  # seconds; ``advance`` moves the stand-in's clock forward
        self._idempotency: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self._in_flight: set[str] = set()
        self._failures: dict[str, list[int]] = {}
        # Routes whose next answers are lost on the way back: Stripe did the work (and saved
        # it under the key), but the connection drops before the client reads a byte.
        self._lost_answers: Counter[str] = Counter()
        # Seconds an endpoint (by path, e.g. "/v1/refunds") takes, so tests can overlap calls.
        self.delays: dict[str, float] = {}
        # Paths whose next request is held (once) until ``release()``; ``held`` is set when it
        # arrives. A test kills the client meanwhile; later requests to the path pass.
        self.hold: set[str] = set()
        self.held = asyncio.Event()
        self._release = asyncio.Event()
        # Not part of Stripe's session object: what a session's PaymentIntent will carry.
        self._pending_intent_metadata: dict[str, dict[str, str]] = {}
        self.line_items: dict[str, list[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.base_url = ""

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        self._add_webhook_endpoint_routes(app)
        app.router.add_post("/v1/checkout/sessions", self._create_session)
        app.router.add_get("/v1/checkout/sessions/{id}", self._get_session)
        app.router.add_post("/v1/checkout/sessions/{id}/expire", self._expire_session)
        app.router.add_post("/v1/refunds", self._create_refund)
        app.router.add_get("/v1/refunds", self._list_refunds)
        app.router.add_get("/v1/refunds/{id}", self._get_refund)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        self._client = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> StripeStandin:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def now(self) -> int:
        return int(time.time() + self.clock_offset)

    def advance(self, seconds: float) -> None:
        """Move the stand-in's clock: open sessions past ``expires_at`` then read as expired."""
        self.clock_offset += seconds

    # request plumbing ------------------------------------------------------------------------
    async def _handle(self, request: web.Request, action: _Action) -> web.Response:
        idempotency_key = request.headers.get("Idempotency-Key")
        params: dict[str, Any] = {}
        status, replayed = 200, False
        body: dict[str, Any] = {}
        headers = {"Request-Id": _new_id("req"), "Stripe-Version": API_VERSION}
        try:
            self._authenticate(request)
            self._outage(request)
            if request.method == "POST":
                form = await request.post()
                params = parse_form([(k, str(v)) for k, v in form.items()])
            else:
                params = parse_form(list(request.query.items()))
            if request.method == "POST" and idempotency_key:
                status, body, replayed = await self._idempotent(
                    request, params, idempotency_key, action
                )
            else:
                body = await self._run(request, params, action)
        except StripeRequestError as error:
            status, body = error.status, error.body()
        if status >= 500:
            # What Stripe says with a 500 it saved: retrying this key cannot change it.
            headers["Stripe-Should-Retry"] = "false"
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                params=params,
                idempotency_key=idempotency_key,
                status=status,
                replayed=replayed,
            )
        )
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        route = f"{request.method} {request.path}"
        if self._lost_answers[route] > 0:
            self._lost_answers[route] -= 1
            if request.transport is not None:
                request.transport.abort()
        return web.json_response(body, status=status, headers=headers)

    async def _run(
        self, request: web.Request, params: dict[str, Any], action: _Action
    ) -> dict[str, Any]:
        """The endpoint itself: after any test delay, an injected failure or the action."""
        delay = self.delays.get(request.path, 0.0)
        if delay:
            await asyncio.sleep(delay)
        if request.path in self.hold:
            self.hold.discard(request.path)
            self.held.set()
            await self._release.wait()
        failures = self._failures.get(request.path)
        if failures:
            status = failures.pop(0)
            raise StripeRequestError(
                "An unknown error occurred",
                status=status,
                error_type="api_error",
                executed=True,
            )
        return action(request, params)

    def _outage(self, request: web.Request) -> None:
        route = f"{request.method} {request.path}"
        if self.outages[route] > 0:
            self.outages[route] -= 1
            raise StripeRequestError(
                "An unknown error occurred", status=500, error_type="api_error"
            )

    async def _idempotent(
        self, request: web.Request, params: dict[str, Any], key: str, action: _Action
    ) -> tuple[int, dict[str, Any], bool]:
        """Run ``action`` once per key; a replay returns the first answer (an error the endpoint
        gave included), a key reused with other parameters is refused, and so is one whose
        first request is still running (409, saved for neither)."""
        if len(key) > 255:
            raise StripeRequestError(
                "Idempotency keys can be up to 255 characters.", param="Idempotency-Key"
            )
        fingerprint = _fingerprint(request.method, request.path, params)
        stored = self._idempotency.get(key)
        if stored is not None:
            if stored[0] != fingerprint:
                raise StripeRequestError(
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request.",
                    error_type="idempotency_error",
                )
            return stored[1], stored[2], True
        if key in self._in_flight:
            raise StripeRequestError(
                "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still "
                "going through): "
                f"{key}. Please try again later.",
                status=409,
                error_type="idempotency_error",
            )
        self._in_flight.add(key)
        try:
            body = await self._run(request, params, action)
        except StripeRequestError as error:
            # Stripe saves the answer once the endpoint ran, errors (500s too) included;
            # a request refused by parameter validation saves nothing.
            if error.executed:
                self._idempotency[key] = (fingerprint, error.status, error.body())
            raise
        finally:
            self._in_flight.discard(key)
        self._idempotency[key] = (fingerprint, 200, body)
        return 200, body, False

    # test controls: failures and timing -------------------------------------------------------
    def release(self) -> None:
        """Let the held request go on (its client may be gone by then)."""
        self._release.set()

    @property
    def in_flight(self) -> int:
        """Idempotent requests whose endpoint is running right now (see ``delays``)."""
        return len(self._in_flight)

    def fail_next(self, path: str, *, status: int = 500, times: int = 1) -> None:
        """The next ``times`` requests to ``path`` (e.g. "/v1/refunds") fail inside Stripe
        with an ``api_error``; like any answer the endpoint gave, it is saved under the
        request's idempotency key."""
        self._failures.setdefault(path, []).extend([status] * times)

    def lose_answers(self, route: str, *, times: int = 1) -> None:
        """The next ``times`` requests to ``route`` (e.g. "POST /v1/refunds") are carried out,
        then the connection drops before the answer: what a timeout or a reset looks like
        to the caller."""
        self._lost_answers[route] += times

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme != "Bearer" or not key.startswith("sk_test_") or key != self.api_key:
            shown = (key[:8] + "*" * 4 + key[-4:]) if key else "(none)"
            raise StripeRequestError(f"Invalid API Key provided: {shown}", status=401)

    def _session_or_404(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            raise StripeRequestError(
                f"No such checkout.session: '{session_id}'",
                status=404,
                param="session",
                code="resource_missing",
            )
        self._refresh(session)
        return session

    def _refresh(self, session: dict[str, Any]) -> None:
        """Stripe expires open sessions at ``expires_at`` on its own."""
        if session["status"] == "open" and self.now() >= session["expires_at"]:
            self._mark_expired(session)

    def _mark_expired(self, session: dict[str, Any]) -> dict[str, Any]:
        session["status"] = "expired"
        session["url"] = None
        event = self.make_event("checkout.session.expired", session)
        self.events.append(event)
        return event

    # endpoints -------------------------------------------------------------------------------
    async def _create_session(self, request: web.Request) -> web.Response:
        return await self._handle(request, self._do_create_session)

    async def _get_session(self, request: web.Request) -> web.Response:
        return await self._handle(
            request, lambda req, _: copy.deepcopy(self._session_or_404(req.match_info["id"]))
        )

    async def _expire_session(self, request: web.Request) -> web.Response:
        def expire(req: web.Request, _: dict[str, Any]) -> dict[str, Any]:
            session = self._session_or_404(req.match_info["id"])
            if session["status"] != "open":
                raise StripeRequestError(
                    f'Only Checkout Sessions with a status in ["open"] can be expired. This '
                    f'Checkout Session has a status of "{session["status"]}".',
                    code="checkout_session_not_open",
                    executed=True,
                )
            self._mark_expired(session)
            return copy.deepcopy(session)

        return await self._handle(request, expire)

    async def _create_refund(self, request: web.Request) -> web.Response:
        return await self._handle(request, self._do_create_refund)

    async def _list_refunds(self, request: web.Request) -> web.Response:
        def listing(_: web.Request, params: dict[str, Any]) -> dict[str, Any]:
            for name in params:
                if name not in ("payment_intent", "charge", "limit"):
                    raise StripeRequestError(f"Received unknown parameter: {name}", param=name)
            limit = _int_param(params.get("limit", "10"), "limit", minimum=1)
            if limit > 100:
                raise StripeRequestError(
                    "This value must be less than or equal to 100.", param="limit"
                )
            found = [
                copy.deepcopy(refund)
                for refund in sorted(self.refunds.values(), key=lambda r: -r["created"])
                if params.get("payment_intent") in (None, refund["payment_intent"])
                and params.get("charge") in (None, refund["charge"])
            ]
            return {
                "object": "list",
                "data": found[:limit],
                "has_more": len(found) > limit,
                "url": "/v1/refunds",
            }

        return await self._handle(request, listing)

    async def _get_refund(self, request: web.Request) -> web.Response:
        def get(req: web.Request, _: dict[str, Any]) -> dict[str, Any]:
            refund = self.refunds.get(req.match_info["id"])
            if refund is None:
                raise StripeRequestError(
                    f"No such refund: '{req.match_info['id']}'",
                    status=404,
                    code="resource_missing",
                )
            return copy.deepcopy(refund)

        return await self._handle(request, get)

    def _do_create_session(self, _: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        for name in params:
            if name not in SESSION_PARAMS:
                raise StripeRequestError(f"Received unknown parameter: {name}", param=name)
        mode = params.get("mode")
        if mode != "payment":
            raise StripeRequestError(
                "The stand-in supports mode=payment only"
                if mode
                else "Missing required param: mode.",
                param="mode",
            )
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise StripeRequestError(
                "You must specify `line_items` in `payment` mode.", param="line_items"
            )
        if len(items) > 100:
            raise StripeRequestError("At most 100 line items", param="line_items")
        currency = None
        total = 0
        line_items = []
        for index, item in enumerate(items):
            where = f"line_items[{index}]"
            if not isinstance(item, dict):
                raise StripeRequestError("Invalid object", param=where)
            quantity = _int_param(item.get("quantity"), f"{where}[quantity]", minimum=1)
            price_data = item.get("price_data")
            if not isinstance(price_data, dict):
                raise StripeRequestError(
                    "You must specify either `price` or `price_data` for each line item.",
                    param=where,
                )
            item_currency = _check_currency(
                price_data.get("currency"), f"{where}[price_data][currency]"
            )
            if currency is not None and item_currency != currency:
                raise StripeRequestError(
                    "All line items must use the same currency.",
                    param=f"{where}[price_data][currency]",
                )
            currency = item_currency
            unit_amount = _int_param(
                price_data.get("unit_amount"), f"{where}[price_data][unit_amount]", minimum=0
            )
            _check_amount_for_currency(unit_amount, currency, f"{where}[price_data][unit_amount]")
            product = price_data.get("product_data")
            if not isinstance(product, dict) or not product.get("name"):
                raise StripeRequestError(
                    "Missing required param: line_items[0][price_data][product_data][name].",
                    param=f"{where}[price_data][product_data][name]",
                )
            total += unit_amount * quantity
            line_items.append(
                {
                    "quantity": quantity,
                    "unit_amount": unit_amount,
                    "currency": currency,
                    "name": product["name"],
                    "description": product.get("description"),
                }
            )
        assert currency is not None
        minimum = MINIMUM_CHARGE.get(currency, 1)
        if total < minimum:
            raise StripeRequestError(
                f"The Checkout Session's total amount due must add up to at least {minimum} "
                f"{currency}.",
                param="line_items",
                code="amount_too_small",
            )
        created = self.now()
        expires_at = created + 24 * 3600
        if "expires_at" in params:
            expires_at = _int_param(params["expires_at"], "expires_at")
            if not created + 1800 <= expires_at <= created + 24 * 3600:
                raise StripeRequestError(
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                    "Checkout Session creation.",
                    param="expires_at",
                )
        success_url = _check_url(params.get("success_url"), "success_url")
        cancel_url = (
            _check_url(params["cancel_url"], "cancel_url") if "cancel_url" in params else None
        )
        metadata = _check_metadata(params.get("metadata"), "metadata")
        intent_data = params.get("payment_intent_data") or {}
        if not isinstance(intent_data, dict):
            raise StripeRequestError("Invalid object", param="payment_intent_data")
        intent_metadata = _check_metadata(
            intent_data.get("metadata"), "payment_intent_data[metadata]"
        )
        reference = params.get("client_reference_id")
        if reference is not None and (not isinstance(reference, str) or len(reference) > 200):
            raise StripeRequestError(
                "client_reference_id can be up to 200 characters.", param="client_reference_id"
            )
        email = params.get("customer_email")
        if email is not None and (not isinstance(email, str) or "@" not in email):
            raise StripeRequestError(
                f"Invalid email address: {email}", param="customer_email", code="email_invalid"
            )
        session_id = _new_id("cs_test")
        session: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_subtotal": total,
            "amount_total": total,
            "currency": currency,
            "client_reference_id": reference,
            "customer_email": email,
            "customer_details": None,
            "metadata": metadata,
            "expires_at": expires_at,
            "created": created,
            "livemode": False,
            "payment_intent": None,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "url": f"{self.base_url}/c/pay/{session_id}",
            "ui_mode": "hosted_page",
        }
        self.sessions[session_id] = session
        self._pending_intent_metadata[session_id] = intent_metadata
        self.line_items[session_id] = line_items
        return copy.deepcopy(session)

    def _do_create_refund(self, _: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        for name in params:
            if name not in REFUND_PARAMS:
                raise StripeRequestError(f"Received unknown parameter: {name}", param=name)
        intent_id = params.get("payment_intent")
        charge_id = params.get("charge")
        if not intent_id and not charge_id:
            raise StripeRequestError(
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
            )
        wanted = _int_param(params["amount"], "amount", minimum=1) if "amount" in params else None
        reason = params.get("reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise StripeRequestError(f"Invalid reason: {reason}", param="reason")
        metadata = _check_metadata(params.get("metadata"), "metadata")
        if intent_id:
            intent = self.payment_intents.get(intent_id)
            if intent is None:
                raise StripeRequestError(
                    f"No such payment_intent: '{intent_id}'",
                    status=404,
                    param="payment_intent",
                    code="resource_missing",
                )
            charge_id = intent.get("latest_charge")
            if intent["status"] != "succeeded" or not charge_id:
                raise StripeRequestError(
                    f"This PaymentIntent ({intent_id}) does not have a successful charge to "
                    "refund.",
                    param="payment_intent",
                    code="charge_not_refundable",
                    executed=True,
                )
        charge = self.charges.get(str(charge_id))
        if charge is None:
            raise StripeRequestError(
                f"No such charge: '{charge_id}'", status=404, code="resource_missing"
            )
        if wanted is not None:
            _check_amount_for_currency(wanted, charge["currency"], "amount")
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise StripeRequestError(
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
                executed=True,
            )
        if wanted is not None and wanted > remaining:
            raise StripeRequestError(
                f"Refund amount ({wanted}) is greater than unrefunded amount on charge "
                f"({remaining})",
                param="amount",
                code="amount_too_large",
                executed=True,
            )
        amount = remaining if wanted is None else wanted
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": charge["currency"],
            "charge": charge["id"],
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "metadata": metadata,
            "status": "succeeded",
            "created": self.now(),
        }
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        charge["refunds"]["data"].insert(0, copy.deepcopy(refund))
        charge["refunds"]["total_count"] += 1
        self.events.append(self.make_event("refund.created", refund))
        self.events.append(self.make_event("charge.refunded", charge))
        return copy.deepcopy(refund)

    # test controls: Stripe's side ------------------------------------------------------------
    def complete_session(self, session_id: str, *, payment_status: str = "paid") -> dict[str, Any]:
        """The customer pays (``payment_status="unpaid"`` for a delayed method still settling).

        Returns the checkout.session.completed event Stripe would send.
        """
        session = self.sessions[session_id]
        self._refresh(session)
        if session["status"] != "open":
            raise ValueError(f"session {session_id} is {session['status']}, not open")
        intent_id = _new_id("pi_test")
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": session["amount_total"],
            "amount_received": 0,
            "currency": session["currency"],
            "metadata": dict(self._pending_intent_metadata.get(session_id, {})),
            "status": "processing",
            "latest_charge": None,
        }
        self.payment_intents[intent_id] = intent
        session.update(
            status="complete",
            payment_status="unpaid",
            payment_intent=intent_id,
            url=None,
            customer_details={"email": session.get("customer_email")},
        )
        if payment_status == "paid":
            self._settle(session)
        event = self.make_event("checkout.session.completed", session)
        self.events.append(event)
        return event

    def settle_async_payment(self, session_id: str, *, succeeded: bool) -> dict[str, Any]:
        """A delayed payment method finishes; returns the async_payment_* event."""
        session = self.sessions[session_id]
        if session["status"] != "complete" or session["payment_status"] != "unpaid":
            raise ValueError(f"session {session_id} has no payment in flight")
        if succeeded:
            self._settle(session)
            kind = "checkout.session.async_payment_succeeded"
        else:
            self.payment_intents[session["payment_intent"]]["status"] = "requires_payment_method"
            kind = "checkout.session.async_payment_failed"
        event = self.make_event(kind, session)
        self.events.append(event)
        return event

    def _settle(self, session: dict[str, Any]) -> None:
        intent = self.payment_intents[session["payment_intent"]]
        charge = {
            "id": _new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "metadata": dict(intent["metadata"]),  # Stripe copies it on confirmation
            "paid": True,
            "refunded": False,
            "status": "succeeded",
            "refunds": {"object": "list", "data": [], "total_count": 0},
        }
        self.charges[charge["id"]] = charge
        intent.update(
            status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"]
        )
        session["payment_status"] = "paid"

    def expire_session(self, session_id: str) -> dict[str, Any]:
        """The session reaches ``expires_at`` unpaid; returns the checkout.session.expired event."""
        session = self.sessions[session_id]
        if session["status"] != "open":
            raise ValueError(f"session {session_id} is {session['status']}, not open")
        return self._mark_expired(session)

    def session_event(self, event_type: str, session_id: str) -> dict[str, Any]:
        """An event carrying the session as it is now (for crafting odd deliveries)."""
        return self.make_event(event_type, self.sessions[session_id])

    def make_event(
        self, event_type: str, obj: Mapping[str, Any], *, created: int | None = None
    ) -> dict[str, Any]:
        return {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": created if created is not None else self.now(),
            "data": {"object": copy.deepcopy(dict(obj))},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }

    def events_of(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == event_type]

    # test controls: webhooks -----------------------------------------------------------------
    @staticmethod
    def encode(event: Mapping[str, Any]) -> bytes:
        """Stripe sends pretty-printed JSON; the signature covers these exact bytes."""
        return json.dumps(event, indent=2).encode("utf-8")

    def sign(
        self, payload: bytes, *, timestamp: int | None = None, secret: str | None = None
    ) -> str:
        """A ``Stripe-Signature`` header: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">."""
        stamp = timestamp if timestamp is not None else int(time.time())
        key = (secret or self.webhook_secret).encode("utf-8")
        digest = hmac.new(key, f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={stamp},v1={digest}"

    async def post(self, url: str, payload: bytes, signature: str | None) -> int:
        assert self._client is not None, "start() the stand-in first"
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        if signature is not None:
            headers["Stripe-Signature"] = signature
        async with self._client.post(url, data=payload, headers=headers) as response:
            await response.read()
            return response.status

    async def deliver(
        self,
        url: str,
        event: Mapping[str, Any],
        *,
        times: int = 1,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> list[int]:
        """Send one event ``times`` times at once (Stripe's at-least-once delivery)."""
        payload = self.encode(event)
        signature = self.sign(payload, timestamp=timestamp, secret=secret)
        return list(
            await asyncio.gather(*(self.post(url, payload, signature) for _ in range(times)))
        )

    async def deliver_all_at_once(self, url: str, events: Sequence[Mapping[str, Any]]) -> list[int]:
        """Several distinct events concurrently."""
        return list(await asyncio.gather(*(self._deliver_one(url, event) for event in events)))

    async def deliver_in_order(self, url: str, events: Sequence[Mapping[str, Any]]) -> list[int]:
        return [await self._deliver_one(url, event) for event in events]

    async def deliver_out_of_order(
        self, url: str, events: Sequence[Mapping[str, Any]]
    ) -> list[int]:
        """The given events, newest first (Stripe does not guarantee order)."""
        return list(reversed(await self.deliver_in_order(url, list(reversed(events)))))

    async def deliver_late(
        self, url: str, event: Mapping[str, Any], *, age_seconds: int = 600
    ) -> int:
        """A delivery signed ``age_seconds`` ago: beyond the 300 s tolerance by default."""
        payload = self.encode(event)
        return await self.post(
            url, payload, self.sign(payload, timestamp=int(time.time()) - age_seconds)
        )

    async def deliver_bad_signature(self, url: str, event: Mapping[str, Any]) -> int:
        """Signed with the wrong secret."""
        payload = self.encode(event)
        return await self.post(url, payload, self.sign(payload, secret="whsec_not_the_right_one"))

    async def deliver_unsigned(self, url: str, event: Mapping[str, Any]) -> int:
        return await self.post(url, self.encode(event), None)

    async def _deliver_one(self, url: str, event: Mapping[str, Any]) -> int:
        return (await self.deliver(url, event))[0]

    # webhook endpoints (what `travelbot doctor` reads) ----------------------------------------
    @property
    def webhook_endpoints(self) -> dict[str, dict[str, Any]]:
        """Endpoints configured on the account, by id, in creation order."""
        endpoints: dict[str, dict[str, Any]] = self.__dict__.setdefault("_webhook_endpoints", {})
        return endpoints

    def add_webhook_endpoint(
        self, url: str, enabled_events: Sequence[str], *, status: str = "enabled"
    ) -> dict[str, Any]:
        """An endpoint as the dashboard or ``POST /v1/webhook_endpoints`` would have made it;
        ``enabled_events=["*"]`` subscribes to everything. The secret is only shown at
        creation, never in a list or retrieve, as on Stripe."""
        endpoint: dict[str, Any] = {
            "id": _new_id("we"),
            "object": "webhook_endpoint",
            "api_version": None,
            "application": None,
            "created": self.now() + len(self.webhook_endpoints),
            "description": None,
            "enabled_events": list(enabled_events),
            "livemode": False,
            "metadata": {},
            "status": status,
            "url": url,
        }
        self.webhook_endpoints[endpoint["id"]] = endpoint
        return copy.deepcopy(endpoint)

    def _add_webhook_endpoint_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/webhook_endpoints", self._list_webhook_endpoints)
        app.router.add_get("/v1/webhook_endpoints/{id}", self._get_webhook_endpoint)

    async def _list_webhook_endpoints(self, request: web.Request) -> web.Response:
        def listing(_: web.Request, params: dict[str, Any]) -> dict[str, Any]:
            limit = _int_param(params.get("limit", "10"), "limit", minimum=1)
            if limit > 100:
                raise StripeRequestError(
                    "This value must be less than or equal to 100.", param="limit"
                )
            # Stripe lists newest first; starting_after pages on from an id of the last page.
            endpoints = sorted(
                self.webhook_endpoints.values(), key=lambda e: e["created"], reverse=True
            )
            after = params.get("starting_after")
            if after is not None:
                ids = [endpoint["id"] for endpoint in endpoints]
                if after not in ids:
                    raise StripeRequestError(
                        f"No such webhook endpoint: '{after}'",
                        status=404,
                        code="resource_missing",
                        param="starting_after",
                    )
                endpoints = endpoints[ids.index(after) + 1 :]
            return {
                "object": "list",
                "data": copy.deepcopy(endpoints[:limit]),
                "has_more": len(endpoints) > limit,
                "url": "/v1/webhook_endpoints",
            }

        return await self._handle(request, listing)

    async def _get_webhook_endpoint(self, request: web.Request) -> web.Response:
        def get(req: web.Request, _: dict[str, Any]) -> dict[str, Any]:
            endpoint = self.webhook_endpoints.get(req.match_info["id"])
            if endpoint is None:
                raise StripeRequestError(
                    f"No such webhook endpoint: '{req.match_info['id']}'",
                    status=404,
                    code="resource_missing",
                )
            return copy.deepcopy(endpoint)

        return await self._handle(request, get)
