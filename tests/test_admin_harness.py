"""The bot as the admin tests drive it: the real composition root and PTB Application, long
polling the sandbox Bot API, SQLite storage in a temporary folder, in-process state.

Only Telegram (the sandbox) and Stripe (the stand-in) are replaced. No tests live here; the
admin and broadcast test modules import ``running_bot``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from bot.bootstrap import Runtime, open_runtime
from bot.config import load_settings
from bot.sandbox import DEFAULT_TOKEN, ChatMessage, SandboxBotApi, SandboxError, UserAction
from bot.web import init_app
from services.models import (
    AuditEntry,
    Booking,
    BookingStatus,
    Gender,
    Itinerary,
    NewBooking,
    PassengerCategory,
    Segment,
    Traveller,
    utcnow,
)
from services.money import Money
from services.storage.base import Storage

S = BookingStatus
QUIET = 0.15  # seconds without Bot API traffic that count as "the bot has answered"


@dataclass
class Bot:
    """A running bot and the sandbox its users talk to it through."""

    sandbox: SandboxBotApi
    runtime: Runtime
    webhook_url: str

    @property
    def storage(self) -> Storage:
        return self.runtime.adapters.storage

    async def user(
        self, user_id: int, first_name: str = "Traveller", username: str | None = None
    ) -> int:
        with contextlib.suppress(SandboxError):  # already there
            await self.sandbox.add_user(user_id, first_name, username)
        return user_id

    async def say(self, user_id: int, text: str, *, timeout: float = 10.0) -> list[str]:
        """What the bot answered ``text`` with (texts of the messages it sent or edited)."""
        action = await self.sandbox.user_sends(user_id, text)
        return [m.text for m in await self._reply(action, timeout)]

    async def press(self, user_id: int, label: str, *, timeout: float = 10.0) -> list[str]:
        action = await self.sandbox.user_presses_label(user_id, label)
        return [m.text for m in await self._reply(action, timeout)]

    async def say_silently(self, user_id: int, text: str) -> list[ChatMessage]:
        """Send and wait until the bot is done: what it sent (expected: nothing)."""
        action = await self.sandbox.user_sends(user_id, text)
        await self.sandbox.wait_idle(user_id, quiet=0.5)
        return self.sandbox.messages_since(user_id, action.seq)

    async def _reply(self, action: UserAction, timeout: float) -> list[ChatMessage]:
        return await self.sandbox.wait_for_reply(action, quiet=QUIET, timeout=timeout)

    def last(self, user_id: int) -> ChatMessage:
        return self.sandbox.last_bot_message(user_id)

    async def audit(self, action: str | None = None) -> list[AuditEntry]:
        rows = await self.storage.list_audit(limit=1000)
        return [row for row in rows if action is None or row.action == action]


@asynccontextmanager
async def running_bot(admin_ids: tuple[int, ...], **settings: Any) -> AsyncIterator[Bot]:
    """Sandbox + bot on embedded defaults (SQLite in a fresh folder, memory state, demo
    fares); ``settings`` override (e.g. the Stripe ones)."""
    with tempfile.TemporaryDirectory(prefix="travelbot-admin-") as folder:
        values: dict[str, Any] = {
            "sqlite_path": Path(folder) / "bot.sqlite3",
            "admin_user_ids": ",".join(str(i) for i in admin_ids),
            "redis_url": None,
            "supabase_url": None,
            "stripe_secret_key": None,
            "stripe_webhook_secret": None,
            "telegram_bot_token": None,
            "flight_provider": "demo",
            "log_level": "INFO",
        }
        values.update(settings)
        config = load_settings(**values)
        sandbox = SandboxBotApi(idle_quiet=QUIET)
        await sandbox.start()
        try:
            async with open_runtime(
                config, token=DEFAULT_TOKEN, telegram_base_url=sandbox.url
            ) as runtime:
                server = TestServer(
                    init_app(runtime, telegram_webhook_route=False), host="127.0.0.1"
                )
                await server.start_server()
                application = runtime.application
                await application.start()
                assert application.updater is not None
                await application.updater.start_polling(poll_interval=0.0, timeout=5)
                try:
                    yield Bot(
                        sandbox=sandbox,
                        runtime=runtime,
                        webhook_url=str(server.make_url("/stripe/webhook")),
                    )
                finally:
                    await application.updater.stop()
                    await application.stop()
                    await server.close()
        finally:
            await sandbox.stop()


def traveller(passport: str = "CA1234567", email: str = "ana.silva@example.com") -> Traveller:
    return Traveller(
        category=PassengerCategory.ADULT,
        first_name="Ana",
        last_name="Silva",
        birth_date=date(1990, 5, 17),
        gender=Gender.FEMALE,
        nationality="PT",
        passport_number=passport,
        passport_expiry=date(2035, 8, 20),
        email=email,
        phone="+351 912 345 678",
    )


def itinerary(
    price: Money,
    origin: str = "LIS",
    destination: str = "NRT",
    days_ahead: int = 40,
) -> Itinerary:
    leave = datetime.now(UTC).replace(hour=10, minute=5, second=0, microsecond=0) + timedelta(
        days=days_ahead
    )
    return Itinerary(
        id=f"it-{origin}-{destination}-{price.amount}",
        provider="demo",
        segments=(
            Segment(
                carrier="TP",
                flight_number="TP80",
                origin=origin,
                destination=destination,
                departure=leave,
                arrival=leave + timedelta(hours=14, minutes=35),
            ),
        ),
        price=price,
    )


async def make_booking(
    storage: Storage,
    user_id: int,
    status: BookingStatus,
    price: Money = Money(amount=89_00, currency="EUR"),  # noqa: B008 - frozen model
    *,
    route: tuple[str, str] = ("LIS", "NRT"),
    passport: str = "CA1234567",
) -> Booking:
    """A booking moved along the real status path to ``status``."""
    booking = await storage.create_booking(
        NewBooking(
            user_id=user_id,
            itinerary=itinerary(price, *route),
            travellers=(traveller(passport),),
            amount=price,
            payment_deadline=utcnow() + timedelta(minutes=30),
        )
    )
    path = {
        S.DRAFT: [],
        S.AWAITING_PAYMENT: [S.AWAITING_PAYMENT],
        S.EXPIRED: [S.AWAITING_PAYMENT, S.EXPIRED],
        S.PAID: [S.AWAITING_PAYMENT, S.PAID],
        S.CONFIRMED: [S.AWAITING_PAYMENT, S.PAID, S.CONFIRMED],
        S.CANCELLED: [S.AWAITING_PAYMENT, S.PAID, S.CONFIRMED, S.CANCELLED],
    }[status]
    current = S.DRAFT
    for step in path:
        intent = f"pi_test_{booking.reference}" if step is S.PAID else None
        assert await storage.transition(booking.id, current, step, payment_intent_id=intent)
        current = step
    found = await storage.get_booking(booking.id)
    assert found is not None
    return found
