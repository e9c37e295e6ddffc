"""The Stripe adapter against the local Stripe stand-in: sessions, refunds, signed webhooks."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from services.models import (
    Booking,
    Gender,
    Itinerary,
    PassengerCategory,
    Segment,
    Traveller,
    today_anywhere,
)
from services.money import Money
from services.payments.base import (
    CheckoutSession,
    InvalidSignatureError,
    MalformedEventError,
    PaymentError,
    PaymentUnavailableError,
)
from services.payments.events import from_stripe_amount, to_stripe_amount
from services.payments.stripe import StripeGateway
from tests.standins.stripe import StripeStandin

SUCCESS = "https://t.me/travel_test_bot?start=paid"
CANCEL = "https://t.me/travel_test_bot?start=booking"

# The payment page names the trip's days as the chat does: with the year only when the trip
# is not this year (the trip below is in 2027).
YEAR = "" if today_anywhere().year == 2027 else " 2027"


def make_booking(
    amount: Money = Money(amount=89_000, currency="EUR"),  # noqa: B008 - frozen model
    *,
    inbound: bool = False,
    email: str | None = "ana@example.com",
) -> Booking:
    segments = [
        Segment(
            carrier="TP",
            flight_number="TP80",
            origin="LIS",
            destination="NRT",
            departure=datetime(2027, 3, 12, 10, 5, tzinfo=UTC),
            arrival=datetime(2027, 3, 13, 7, 40, tzinfo=UTC),
        )
    ]
    if inbound:
        segments.append(
            Segment(
                carrier="TP",
                flight_number="TP81",
                origin="NRT",
                destination="LIS",
                departure=datetime(2027, 3, 21, 11, 0, tzinfo=UTC),
                arrival=datetime(2027, 3, 21, 20, 0, tzinfo=UTC),
                inbound=True,
            )
        )
    itinerary = Itinerary(id="it-1", provider="demo", segments=tuple(segments), price=amount)
    traveller = Traveller(
        category=PassengerCategory.ADULT,
        first_name="Ana",
        last_name="Silva",
        birth_date=date(1990, 5, 17),
        gender=Gender.FEMALE,
        nationality="PT",
        passport_number="CA1234567",
        passport_expiry=date(2031, 8, 20),
        email=email,
    )
    now = datetime.now(UTC)
    return Booking(
        id=str(uuid.uuid4()),
        reference="K7MP3Q",
        user_id=42,
        itinerary=itinerary,
        travellers=(traveller,),
        amount=amount,
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
async def stripe_api() -> AsyncIterator[StripeStandin]:
    async with StripeStandin() as standin:
        yield standin


@pytest.fixture
async def gateway(stripe_api: StripeStandin) -> AsyncIterator[StripeGateway]:
    stripe_gateway = StripeGateway(
        stripe_api.api_key, stripe_api.webhook_secret, api_base=stripe_api.base_url
    )
    yield stripe_gateway
    await stripe_gateway.close()


async def create(
    gateway: StripeGateway,
    booking: Booking,
    key: str = "checkout:1",
    *,
    expires_at: datetime | None = None,
) -> CheckoutSession:
    return await gateway.create_checkout(
        booking,
        success_url=SUCCESS,
        cancel_url=CANCEL,
        expires_at=expires_at or datetime.now(UTC) + timedelta(minutes=30),
        idempotency_key=key,
    )


# checkout sessions ---------------------------------------------------------------------------
async def test_session_carries_amount_currency_reference_expiry_and_metadata(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    booking = make_booking()
    before = int(time.time())
    session = await create(gateway, booking)

    assert session.amount == Money(amount=89_000, currency="EUR")
    assert session.client_reference_id == "K7MP3Q"
    assert session.metadata == {"booking_id": booking.id, "reference": "K7MP3Q"}
    assert session.status == "open"
    assert session.payment_status == "unpaid"
    assert session.url.startswith(stripe_api.base_url)
    window = session.expires_at.timestamp() - before
    assert 30 * 60 <= window <= 32 * 60

    stored = stripe_api.sessions[session.id]
    assert stored["amount_total"] == 89_000
    assert stored["currency"] == "eur"
    sent = stripe_api.requests[0].params
    assert sent["mode"] == "payment"
    assert sent["line_items"] == [
        {
            "price_data": {
                "currency": "eur",
                "unit_amount": "89000",
                "product_data": {
                    "name": f"Flight LIS → NRT, Fri 12 Mar{YEAR}",
                    "description": "Booking K7MP3Q · 1 traveller",
                },
            },
            "quantity": "1",
        }
    ]
    assert sent["payment_intent_data"] == {"metadata": session.metadata}
    assert sent["customer_email"] == "ana@example.com"
    assert sent["success_url"] == SUCCESS
    assert sent["cancel_url"] == CANCEL
    assert stripe_api.requests[0].idempotency_key == "checkout:1"


async def test_return_trip_is_named_with_both_dates(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    await create(gateway, make_booking(inbound=True, email=None))
    sent = stripe_api.requests[0].params
    name = sent["line_items"][0]["price_data"]["product_data"]["name"]
    assert name == f"Flight LIS ⇄ NRT, Fri 12 Mar{YEAR} – Sun 21 Mar{YEAR}"
    assert "customer_email" not in sent


async def test_double_create_with_one_key_makes_one_session(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    booking = make_booking()
    expires_at = datetime.now(UTC) + timedelta(minutes=45)
    first = await create(gateway, booking, expires_at=expires_at)
    second = await create(gateway, booking, expires_at=expires_at)
    together = await asyncio.gather(
        *(create(gateway, booking, expires_at=expires_at) for _ in range(5))
    )

    assert {first.id, second.id, *(s.id for s in together)} == {first.id}
    assert len(stripe_api.sessions) == 1
    assert [r.replayed for r in stripe_api.requests] == [False] + [True] * 6


async def test_key_reused_with_other_parameters_is_refused(gateway: StripeGateway) -> None:
    await create(gateway, make_booking(), expires_at=datetime.now(UTC) + timedelta(minutes=40))
    other = make_booking(Money(amount=1_000, currency="EUR"))
    with pytest.raises(PaymentError, match="same parameters"):
        await create(gateway, other, expires_at=datetime.now(UTC) + timedelta(minutes=40))


@pytest.mark.parametrize(
    ("asked", "low", "high"),
    [
        (timedelta(minutes=5), 30 * 60, 32 * 60),  # raised to Stripe's minimum
        (timedelta(hours=2), 2 * 3600 - 2, 2 * 3600 + 2),  # kept
        (timedelta(days=3), 23 * 3600, 24 * 3600),  # lowered to Stripe's maximum
    ],
)
async def test_expiry_stays_within_stripes_window(
    gateway: StripeGateway, asked: timedelta, low: int, high: int
) -> None:
    now = time.time()
    session = await create(gateway, make_booking(), expires_at=datetime.now(UTC) + asked)
    assert low <= session.expires_at.timestamp() - now <= high


@pytest.mark.parametrize(
    ("money", "stripe_units"),
    [
        (Money(amount=12_000, currency="JPY"), 12_000),  # zero-decimal at both ends
        (Money(amount=5_000, currency="ISK"), 500_000),  # whole krónur here, hundredths there
        (Money(amount=12_340, currency="KWD"), 12_340),  # three decimals, last digit 0
    ],
)
async def test_currencies_are_sent_in_stripes_units(
    gateway: StripeGateway, stripe_api: StripeStandin, money: Money, stripe_units: int
) -> None:
    session = await create(gateway, make_booking(money))
    assert stripe_api.sessions[session.id]["amount_total"] == stripe_units
    assert session.amount == money
    assert to_stripe_amount(money) == stripe_units
    assert from_stripe_amount(stripe_units, money.currency.lower()) == money


async def test_an_amount_stripe_cannot_represent_is_refused_before_sending(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    with pytest.raises(PaymentError, match="cannot be charged exactly"):
        await create(gateway, make_booking(Money(amount=12_345, currency="KWD")))
    assert stripe_api.requests == []


async def test_retrieve_and_expire(gateway: StripeGateway, stripe_api: StripeStandin) -> None:
    session = await create(gateway, make_booking())
    assert (await gateway.retrieve_checkout(session.id)).status == "open"
    await gateway.expire_checkout(session.id)
    expired = await gateway.retrieve_checkout(session.id)
    assert expired.status == "expired"
    assert expired.url == ""
    with pytest.raises(PaymentError, match="open"):
        await gateway.expire_checkout(session.id)
    with pytest.raises(PaymentError, match=r"No such checkout\.session"):
        await gateway.retrieve_checkout("cs_test_nope")


async def test_session_expires_on_its_own_at_expires_at(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    session = await create(gateway, make_booking())
    stripe_api.advance(31 * 60)
    assert (await gateway.retrieve_checkout(session.id)).status == "expired"
    assert stripe_api.events_of("checkout.session.expired")


async def test_no_email_reaches_the_logs_even_at_debug(
    gateway: StripeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session = await create(gateway, make_booking())
    await gateway.retrieve_checkout(session.id)
    assert caplog.records  # the gateway does log
    assert "ana@example.com" not in caplog.text
    assert "CA1234567" not in caplog.text


# refunds -------------------------------------------------------------------------------------
async def test_refunds_full_partial_and_limits(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    session = await create(gateway, make_booking())
    stripe_api.complete_session(session.id)
    intent = (await gateway.retrieve_checkout(session.id)).payment_intent
    assert intent is not None

    part = await gateway.refund(
        intent, amount=Money(amount=9_000, currency="EUR"), reason=None, idempotency_key="r:1"
    )
    assert part.amount == Money(amount=9_000, currency="EUR")
    assert part.status == "succeeded"
    again = await gateway.refund(
        intent, amount=Money(amount=9_000, currency="EUR"), reason=None, idempotency_key="r:1"
    )
    assert again.id == part.id  # replayed, not refunded twice
    with pytest.raises(PaymentError, match="greater than unrefunded"):
        await gateway.refund(
            intent, amount=Money(amount=80_001, currency="EUR"), reason=None, idempotency_key="r:2"
        )
    rest = await gateway.refund(
        intent, amount=None, reason="requested_by_customer", idempotency_key="r:3"
    )
    assert rest.amount == Money(amount=80_000, currency="EUR")
    with pytest.raises(PaymentError, match="already been refunded"):
        await gateway.refund(intent, amount=None, reason=None, idempotency_key="r:4")
    refunded = stripe_api.events_of("charge.refunded")[-1]["data"]["object"]
    assert refunded["refunded"] is True
    assert refunded["metadata"]["reference"] == "K7MP3Q"


async def test_free_text_reason_goes_to_metadata(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    session = await create(gateway, make_booking())
    stripe_api.complete_session(session.id)
    intent = stripe_api.sessions[session.id]["payment_intent"]
    await gateway.refund(intent, amount=None, reason="ticketing failed", idempotency_key="r")
    refund = next(iter(stripe_api.refunds.values()))
    assert refund["reason"] is None
    assert refund["metadata"]["note"] == "ticketing failed"


async def test_unpaid_payment_cannot_be_refunded(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    session = await create(gateway, make_booking())
    stripe_api.complete_session(session.id, payment_status="unpaid")
    intent = stripe_api.sessions[session.id]["payment_intent"]
    with pytest.raises(PaymentError, match="does not have a successful charge"):
        await gateway.refund(intent, amount=None, reason=None, idempotency_key="r")


# errors --------------------------------------------------------------------------------------
async def test_wrong_api_key_is_a_payment_error(stripe_api: StripeStandin) -> None:
    wrong = StripeGateway("sk_test_wrong", stripe_api.webhook_secret, api_base=stripe_api.base_url)
    try:
        with pytest.raises(PaymentError, match="Invalid API Key") as caught:
            await create(wrong, make_booking())
        assert not isinstance(caught.value, PaymentUnavailableError)
    finally:
        await wrong.close()


async def test_unreachable_stripe_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = StripeGateway(
        "sk_test_x", "whsec_x", api_base=f"http://127.0.0.1:{port}", max_network_retries=0
    )
    try:
        with pytest.raises(PaymentUnavailableError):
            await create(down, make_booking())
    finally:
        await down.close()


# webhook signatures --------------------------------------------------------------------------
def _completed_event(stripe_api: StripeStandin) -> dict[str, object]:
    booking = make_booking()
    session_id = "cs_test_handmade"
    stripe_api.sessions[session_id] = {
        "id": session_id,
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid",
        "amount_total": 89_000,
        "currency": "eur",
        "client_reference_id": booking.reference,
        "metadata": {"booking_id": booking.id, "reference": booking.reference},
        "expires_at": int(time.time()) + 1800,
        "payment_intent": "pi_test_1",
        "url": None,
    }
    return stripe_api.session_event("checkout.session.completed", session_id)


def test_good_signature_gives_the_event(gateway: StripeGateway, stripe_api: StripeStandin) -> None:
    event = _completed_event(stripe_api)
    payload = stripe_api.encode(event)
    parsed = gateway.parse_event(payload, stripe_api.sign(payload))
    assert parsed.id == event["id"]
    assert parsed.type == "checkout.session.completed"
    assert parsed.session is not None
    assert parsed.session.payment_status == "paid"
    assert parsed.session.amount == Money(amount=89_000, currency="EUR")
    assert parsed.payment_intent == "pi_test_1"


def test_any_matching_v1_signature_is_accepted(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    """During a secret roll Stripe signs with both secrets."""
    payload = stripe_api.encode(_completed_event(stripe_api))
    good = stripe_api.sign(payload)
    stamp, v1 = good.split(",")
    other = stripe_api.sign(payload, secret="whsec_old").split(",")[1]
    assert gateway.parse_event(payload, f"{stamp},{other},{v1}").type == (
        "checkout.session.completed"
    )


@pytest.mark.parametrize("case", ["wrong secret", "missing", "stale", "tampered", "garbage"])
def test_bad_signatures_are_refused(
    gateway: StripeGateway, stripe_api: StripeStandin, case: str
) -> None:
    payload = stripe_api.encode(_completed_event(stripe_api))
    header: str | None
    if case == "wrong secret":
        header = stripe_api.sign(payload, secret="whsec_someone_else")
    elif case == "missing":
        header = None
    elif case == "stale":
        header = stripe_api.sign(payload, timestamp=int(time.time()) - 301)
    elif case == "tampered":
        header = stripe_api.sign(payload)
        payload = payload.replace(b"89000", b"100")
    else:
        header = "definitely not a signature"
    with pytest.raises(InvalidSignatureError):
        gateway.parse_event(payload, header)


def test_signature_is_checked_before_the_body_is_read(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    with pytest.raises(InvalidSignatureError):
        gateway.parse_event(b"{not json", stripe_api.sign(b"{other}"))
    with pytest.raises(InvalidSignatureError):
        gateway.parse_event(b"\xff\xfe", stripe_api.sign(b"x"))


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        json.dumps({"object": "event", "id": "evt_1", "type": "x"}).encode(),
        json.dumps(
            {
                "object": "event",
                "id": "evt_1",
                "type": "checkout.session.completed",
                "created": 1,
                "data": {"object": {"id": "cs_1", "amount_total": "a lot"}},
            }
        ).encode(),
    ],
)
def test_signed_but_unreadable_bodies_are_malformed(
    gateway: StripeGateway, stripe_api: StripeStandin, body: bytes
) -> None:
    with pytest.raises(MalformedEventError):
        gateway.parse_event(body, stripe_api.sign(body))


# the stand-in itself validates like Stripe ---------------------------------------------------
async def _raw_create(
    stripe_api: StripeStandin, form: dict[str, str], key: str | None = None
) -> tuple[int, Any]:
    base = {
        "mode": "payment",
        "line_items[0][price_data][currency]": "eur",
        "line_items[0][price_data][unit_amount]": "5000",
        "line_items[0][price_data][product_data][name]": "Flight",
        "line_items[0][quantity]": "1",
        "success_url": SUCCESS,
        "expires_at": str(int(time.time()) + 3600),
    }
    base.update(form)
    headers = {"Authorization": f"Bearer {stripe_api.api_key}"}
    if key:
        headers["Idempotency-Key"] = key
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stripe_api.base_url}/v1/checkout/sessions",
            data={k: v for k, v in base.items() if v != "<omit>"},
            headers=headers,
        ) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("form", "param"),
    [
        ({"line_items[0][price_data][unit_amount]": "50.5"}, "unit_amount"),
        ({"line_items[0][price_data][currency]": "xyz"}, "currency"),
        ({"expires_at": str(int(time.time()) + 600)}, "expires_at"),
        ({"expires_at": str(int(time.time()) + 25 * 3600)}, "expires_at"),
        ({"metadata[bad[key]]": "x"}, "metadata"),
        ({"metadata[k]": "x" * 501}, "metadata"),
        ({"line_items[0][price_data][unit_amount]": "10"}, "line_items"),
        ({"mode": "<omit>"}, "mode"),
        ({"amount": "100"}, "amount"),
    ],
)
async def test_standin_rejects_what_stripe_rejects(
    stripe_api: StripeStandin, form: dict[str, str], param: str
) -> None:
    status, body = await _raw_create(stripe_api, form)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert param in body["error"].get("param", "")
    assert stripe_api.sessions == {}


async def test_standin_requires_a_test_secret_key(stripe_api: StripeStandin) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{stripe_api.base_url}/v1/checkout/sessions/cs_x",
            headers={"Authorization": "Bearer sk_live_nope"},
        ) as response,
    ):
        assert response.status == 401


async def test_standin_replays_and_guards_idempotency_keys(stripe_api: StripeStandin) -> None:
    same = {"expires_at": str(int(time.time()) + 3600)}
    first = await _raw_create(stripe_api, same, key="k")
    replay = await _raw_create(stripe_api, same, key="k")
    changed = await _raw_create(
        stripe_api, {**same, "line_items[0][price_data][unit_amount]": "6000"}, key="k"
    )
    assert first == replay
    assert changed[0] == 400
    assert changed[1]["error"]["type"] == "idempotency_error"
    assert len(stripe_api.sessions) == 1


async def _raw_refund(
    stripe_api: StripeStandin, form: dict[str, str], *, key: str
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {stripe_api.api_key}", "Idempotency-Key": key}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stripe_api.base_url}/v1/refunds", data=form, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_standin_replays_an_error_the_endpoint_gave_under_its_key(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    """Like Stripe: once the endpoint ran, its answer (a 500 or a refusal) is the key's answer
    for 24 h; a request refused by parameter validation saves nothing under its key."""
    session = await create(gateway, make_booking())
    stripe_api.complete_session(session.id)
    intent = stripe_api.sessions[session.id]["payment_intent"]

    stripe_api.fail_next("/v1/refunds")
    with pytest.raises(PaymentUnavailableError):
        await gateway.refund(intent, amount=None, reason=None, idempotency_key="r:1")
    with pytest.raises(PaymentUnavailableError):  # the stored 500, though Stripe is fine now
        await gateway.refund(intent, amount=None, reason=None, idempotency_key="r:1")
    assert stripe_api.refunds == {}
    assert [r.replayed for r in stripe_api.requests if r.path == "/v1/refunds"] == [False, True]

    too_much = {"payment_intent": intent, "amount": "89001"}
    status, body = await _raw_refund(stripe_api, too_much, key="r:2")
    assert status == 400
    assert body["error"]["code"] == "amount_too_large"
    assert body["error"]["param"] == "amount"
    assert await _raw_refund(
        stripe_api, {"payment_intent": intent, "amount": "100"}, key="r:2"
    ) == (
        400,
        {
            "error": {
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used with the same "
                "parameters they were first used with. Try using a key other than 'r:2' if you "
                "meant to execute a different request.",
            }
        },
    )

    malformed = {"payment_intent": intent, "amount": "ten"}
    assert (await _raw_refund(stripe_api, malformed, key="r:3"))[0] == 400
    status, refund = await _raw_refund(
        stripe_api, {"payment_intent": intent, "amount": "1000"}, key="r:3"
    )
    assert status == 200  # the corrected request may reuse a key validation refused
    assert refund["amount"] == 1000

    rest = await gateway.refund(intent, amount=None, reason=None, idempotency_key="r:4")
    assert rest.amount == Money(amount=88_000, currency="EUR")
    status, body = await _raw_refund(stripe_api, {"payment_intent": intent}, key="r:5")
    assert (status, body["error"]["code"]) == (400, "charge_already_refunded")


async def test_standin_refuses_a_key_whose_first_request_is_still_running(
    gateway: StripeGateway, stripe_api: StripeStandin
) -> None:
    session = await create(gateway, make_booking())
    stripe_api.complete_session(session.id)
    form = {"payment_intent": stripe_api.sessions[session.id]["payment_intent"]}
    stripe_api.delays["/v1/refunds"] = 0.3

    first, second = await asyncio.gather(
        _raw_refund(stripe_api, form, key="r:1"), _raw_refund(stripe_api, form, key="r:1")
    )

    assert sorted([first[0], second[0]]) == [200, 409]
    conflict = first if first[0] == 409 else second
    assert conflict[1]["error"]["type"] == "idempotency_error"
    assert len(stripe_api.refunds) == 1
    assert await _raw_refund(stripe_api, form, key="r:1") == (first if first[0] == 200 else second)
