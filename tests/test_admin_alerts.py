"""Admin alerts read as written: their values are escaped once, where the alert is composed."""

from __future__ import annotations

from bot.bootstrap import admin_alerter
from bot.sandbox.formatting import parse_html
from services import texts
from services.messages import Message
from services.models import Itinerary
from tests.test_bookings import (  # noqa: F401 - fixtures
    World,
    demo_itineraries,
    itinerary,
    pay_and_confirm,
    places,
    stripe_api,
    world,
)


class AdminChats:
    """The Notifier port as Telegram's chats: what each admin was sent."""

    def __init__(self) -> None:
        self.sent: dict[int, list[Message]] = {}

    async def notify(self, user_id: int, message: Message) -> bool:
        self.sent.setdefault(user_id, []).append(message)
        return True


async def test_an_alert_shows_the_error_as_it_was_written(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    chats = AdminChats()
    alert = admin_alerter(chats, frozenset({7, 8}))

    await alert(texts.alert_refund_failed(booking, "Refund <pending> for R&D's card"))

    for admin in (7, 8):
        [message] = chats.sent[admin]
        shown, _ = parse_html(message.text)  # what Telegram displays
        assert "Refund <pending> for R&D's card" in shown
        assert shown.startswith(f"⚠️ 🚨 Refund for booking {booking.reference}")


async def test_an_alert_that_starts_with_the_warning_sign_shows_it_once(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking = await pay_and_confirm(world, itinerary)
    chats = AdminChats()

    await admin_alerter(chats, frozenset({7}))(texts.alert_refunded_outside(booking))

    [message] = chats.sent[7]
    shown, _ = parse_html(message.text)
    assert shown.startswith(f"⚠️ Booking {booking.reference}")
