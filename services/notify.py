"""The port services use to reach a traveller outside a conversation turn (e.g. after a webhook)."""

from __future__ import annotations

from typing import Protocol

from services.messages import Message


class Notifier(Protocol):
    async def notify(self, user_id: int, message: Message) -> bool:
        """Send ``message`` to the user's private chat. False if it could not be delivered
        (the user blocked the bot); other failures raise."""
        ...
