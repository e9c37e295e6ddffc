"""The sandbox checkout: our own test payment page, end to end through the bot's web routes,
SQLite storage and demo fares; paying goes through the same ``handle_event`` as Stripe."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, unused_port

from bot.web_payments import add_payment_routes
from services.bookings import BookingService, RenewalRefusedError
from services.flights.demo import DemoProvider
from services.flights.places import PlaceIndex
from services.models import (
    Booking,
    BookingStatus,
    Itinerary,
    SearchQuery,
    today_anywhere,
    utcnow,
)
from services.payments.base import PaymentError
from services.payments.sandbox import SandboxGateway
from services.storage.sqlite import SQLiteStorage
from tests.test_bookings import RecordingNotifier, cancel_url, success_url, traveller

S = BookingStatus
USER = 777


@pytest.fixture
async def itinerary() -> Itinerary:
    places = PlaceIndex.default()
    query = SearchQuery(
        origin=places.airport_location("LIS"),
        destination=places.airport_location("NRT"),
        departure=today_anywhere() + timedelta(days=40),
    )
    return (await DemoProvider(places=places).search(query))[0]


class Clock:
    """Wall time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


@dataclass
class Sandbox:
    service: BookingService
    gateway: SandboxGateway
    storage: SQLiteStorage
    notifier: RecordingNotifier
    client: TestClient[Any, Any]
    base_url: str
    clock: Clock

    async def booking(self, reference: str) -> Booking:
        found = await self.storage.get_booking_by_reference(reference, user_id=None)
        assert found is not None
        return found

    async def page(self, path: str, *, method: str = "GET", **kw: Any) -> tuple[int, str]:
        async with self.client.request(method, path, **kw) as response:
            return response.status, await response.text()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    storage = SQLiteStorage(tmp_path / "sandbox.sqlite3")
    await storage.start()
    port = unused_port()
    base_url = f"http://127.0.0.1:{port}"
    clock = Clock()
    gateway = SandboxGateway(storage, base_url, clock=clock)
    notifier = RecordingNotifier()
    service = BookingService(
        storage,
        DemoProvider(places=PlaceIndex.default()),
        gateway,
        notifier,
        success_url=success_url,
        cancel_url=cancel_url,
        clock=clock,
    )
    app = web.Application()
    add_payment_routes(app, service, gateway)
    client = TestClient(TestServer(app, host="127.0.0.1", port=port))
    await client.start_server()
    try:
        yield Sandbox(service, gateway, storage, notifier, client, base_url, clock)
    finally:
        await client.close()
        await storage.close()


def _forms(html: str) -> list[str]:
    return re.findall(r'<form method=post action="([^"]+)"', html)


async def test_sandbox_checkout_end_to_end(sandbox: Sandbox, itinerary: Itinerary) -> None:
    booking, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    assert session.id.startswith("cs_sandbox_")
    assert session.url == f"{sandbox.base_url}/checkout/sandbox/{session.id}"
    assert session.amount == itinerary.price

    status, html = await sandbox.page(f"/checkout/sandbox/{session.id}")
    assert status == 200
    assert "TEST PAYMENT" in html
    assert booking.reference in html
    assert "LIS → NRT" in html
    assert itinerary.price.format() in html
    assert _forms(html) == [
        f"/checkout/sandbox/{session.id}/pay",
        f"/checkout/sandbox/{session.id}/cancel",
    ]

    status, html = await sandbox.page(f"/checkout/sandbox/{session.id}/pay", method="POST")
    assert status == 200
    assert "Booking confirmed" in html

    confirmed = await sandbox.booking(booking.reference)
    assert confirmed.status is S.CONFIRMED
    assert confirmed.payment_intent_id is not None
    assert confirmed.payment_intent_id.startswith("pi_sandbox_")
    [told] = sandbox.notifier.to(USER)
    assert "Booking confirmed" in told.text
    assert booking.reference in told.text
    events = await sandbox.storage.list_payment_events(booking.id)
    assert [kind for _, kind, _ in events] == ["checkout.session.completed"]

    status, html = await sandbox.page(f"/checkout/sandbox/{session.id}")
    assert status == 200
    assert "Already paid" in html
    assert _forms(html) == []
    status, _ = await sandbox.page(f"/checkout/sandbox/{session.id}/pay", method="POST")
    assert status == 409
    assert len(sandbox.notifier.sent) == 1


async def test_clicking_pay_many_times_confirms_once(
    sandbox: Sandbox, itinerary: Itinerary
) -> None:
    booking, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    pay = f"/checkout/sandbox/{session.id}/pay"
    results = await asyncio.gather(*(sandbox.page(pay, method="POST") for _ in range(10)))
    assert {status for status, _ in results} <= {200, 409}
    assert (await sandbox.booking(booking.reference)).status is S.CONFIRMED
    assert len(sandbox.notifier.sent) == 1


async def test_double_tap_on_pay_in_the_chat_makes_one_session(
    sandbox: Sandbox, itinerary: Itinerary
) -> None:
    first = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    second = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    assert first[0].id == second[0].id
    assert first[1].id == second[1].id


async def test_cancelling_on_the_page_cancels_the_booking(
    sandbox: Sandbox, itinerary: Itinerary
) -> None:
    """The page's Cancel is the traveller's choice, not an expiry: the booking is cancelled,
    said so in the chat and counted so in /stats; the link cannot be paid or renewed."""
    booking, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))

    status, html = await sandbox.page(f"/checkout/sandbox/{session.id}/cancel", method="POST")
    assert status == 200
    assert "Payment cancelled" in html
    assert "Nothing was charged" in html
    assert (await sandbox.booking(booking.reference)).status is S.CANCELLED
    [told] = sandbox.notifier.to(USER)
    assert f"Booking <b>{booking.reference}</b> is cancelled" in told.text
    assert "nothing was charged" in told.text
    assert "expired" not in told.text
    stats = await sandbox.storage.stats(utcnow() - timedelta(hours=1))
    assert stats.bookings_by_status[S.CANCELLED] == 1
    assert stats.bookings_by_status[S.EXPIRED] == 0

    status, html = await sandbox.page(f"/checkout/sandbox/{session.id}")
    assert _forms(html) == []
    status, _ = await sandbox.page(f"/checkout/sandbox/{session.id}/pay", method="POST")
    assert status == 409
    with pytest.raises(RenewalRefusedError, match="cancelled"):
        await sandbox.service.renew_checkout(USER, booking.reference)
    sandbox.clock.offset = timedelta(minutes=31)
    assert await sandbox.service.expire_overdue() == 0
    assert len(sandbox.notifier.to(USER)) == 1


async def test_an_expired_link_then_a_new_link_then_pay(
    sandbox: Sandbox, itinerary: Itinerary
) -> None:
    booking, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    sandbox.clock.offset = timedelta(minutes=31)
    assert await sandbox.service.expire_overdue() == 1
    assert (await sandbox.booking(booking.reference)).status is S.EXPIRED
    [told] = sandbox.notifier.to(USER)
    assert (told.buttons[0][0].action, told.buttons[0][0].arg) == ("!renew", booking.reference)

    _, fresh = await sandbox.service.renew_checkout(USER, booking.reference)
    assert fresh.id != session.id
    status, html = await sandbox.page(f"/checkout/sandbox/{fresh.id}")
    assert len(_forms(html)) == 2
    status, _ = await sandbox.page(f"/checkout/sandbox/{fresh.id}/pay", method="POST")
    assert status == 200
    assert (await sandbox.booking(booking.reference)).status is S.CONFIRMED
    status, _ = await sandbox.page(f"/checkout/sandbox/{session.id}")
    assert status == 404  # the old link was replaced


async def test_an_unpaid_link_expires_at_its_deadline(
    sandbox: Sandbox, itinerary: Itinerary
) -> None:
    booking, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    sandbox.clock.offset = timedelta(minutes=31)

    assert await sandbox.service.expire_overdue() == 1

    assert (await sandbox.booking(booking.reference)).status is S.EXPIRED
    assert len(sandbox.notifier.containing("expired")) == 1
    status, html = await sandbox.page(f"/checkout/sandbox/{session.id}")
    assert "Payment link expired" in html
    status, _ = await sandbox.page(f"/checkout/sandbox/{session.id}/pay", method="POST")
    assert status == 409


@pytest.mark.parametrize("action", ["", "/pay", "/cancel"])
async def test_unknown_session_is_a_404_page(sandbox: Sandbox, action: str) -> None:
    method = "POST" if action else "GET"
    status, html = await sandbox.page(
        f"/checkout/sandbox/%3Cscript%3Ealert(1)%3C%2Fscript%3E{action}", method=method
    )
    assert status == 404
    assert "not found" in html
    assert "<script>" not in html


async def test_the_amount_comes_from_the_booking_only(
    sandbox: Sandbox, itinerary: Itinerary
) -> None:
    booking, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    status, html = await sandbox.page(f"/checkout/sandbox/{session.id}?amount=1&currency=JPY")
    assert itinerary.price.format() in html
    status, _ = await sandbox.page(
        f"/checkout/sandbox/{session.id}/pay?amount=1",
        method="POST",
        data={"amount": "1", "currency": "JPY"},
    )
    assert status == 200
    [told] = sandbox.notifier.to(USER)
    assert f"Paid: <b>{booking.amount.format()}</b>" in told.text


async def test_the_webhook_takes_no_outside_events_in_sandbox_mode(
    sandbox: Sandbox, itinerary: Itinerary
) -> None:
    booking, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    forged = (await sandbox.gateway.pay(session.id)).model_dump_json().encode()
    for signature in (None, "t=1,v1=00", f"t={int(utcnow().timestamp())},v1={'a' * 64}"):
        headers = {"Stripe-Signature": signature} if signature else {}
        status, _ = await sandbox.page(
            "/stripe/webhook", method="POST", data=forged, headers=headers
        )
        assert status == 400
    assert (await sandbox.booking(booking.reference)).status is S.AWAITING_PAYMENT


async def test_sandbox_events_have_stripes_shape(sandbox: Sandbox, itinerary: Itinerary) -> None:
    booking, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    event = await sandbox.gateway.pay(session.id)
    assert event.type == "checkout.session.completed"
    assert event.session is not None
    assert event.session.status == "complete"
    assert event.session.payment_status == "paid"
    assert event.session.amount == booking.amount
    assert event.session.metadata == {"booking_id": booking.id, "reference": booking.reference}
    assert event.session.client_reference_id == booking.reference
    assert event.payment_intent is not None
    assert event.payment_intent.startswith("pi_sandbox_")
    assert (await sandbox.gateway.pay(session.id)).id == event.id  # one payment, one event


async def test_sandbox_refunds_on_cancel_and_by_admin(
    sandbox: Sandbox, itinerary: Itinerary
) -> None:
    first, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    await sandbox.page(f"/checkout/sandbox/{session.id}/pay", method="POST")
    cancelled = await sandbox.service.cancel_by_user(USER, first.reference)
    assert cancelled.booking.status is S.REFUNDED

    other = itinerary.model_copy(update={"id": "second-offer"})
    second, session = await sandbox.service.start_checkout(USER, other, (traveller(),))
    await sandbox.page(f"/checkout/sandbox/{session.id}/pay", method="POST")
    refunded = await sandbox.service.refund_by_admin(
        second.reference, amount=None, reason=None, admin_id=1
    )
    assert refunded.status is S.REFUNDED
    assert len(sandbox.notifier.containing("refund")) == 1


async def test_sandbox_refuses_to_pay_a_closed_session(
    sandbox: Sandbox, itinerary: Itinerary
) -> None:
    booking, session = await sandbox.service.start_checkout(USER, itinerary, (traveller(),))
    await sandbox.service.abandon(USER, booking.reference)
    with pytest.raises(PaymentError, match="expired"):
        await sandbox.gateway.pay(session.id)
    with pytest.raises(PaymentError, match="no checkout session"):
        await sandbox.gateway.retrieve_checkout("cs_sandbox_unknown")
