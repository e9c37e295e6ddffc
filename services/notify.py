"""The port services use to reach a traveller outside a conversation turn (e.g. after a webhook)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from services.messages import Message


class Notifier(Protocol):
    async def notify(self, user_id: int, message: Message) -> bool:
        """Send ``message`` to the user's private chat. False if it could not be delivered
        (the user blocked the bot); other failures raise."""
        ...


@dataclass(slots=True)
class MemoryNotifier:
    """The in-process ``Notifier``: keeps what was sent, in order, instead of sending it.

    For running the services without Telegram (the flow tests at the engine seam, scripts):
    the local adapter of the port, as the memory state store is of the state port. A user in
    ``blocked`` has blocked the bot: nothing is kept and ``notify`` says so."""

    sent: list[tuple[int, Message]] = field(default_factory=list)
    blocked: set[int] = field(default_factory=set)

    async def notify(self, user_id: int, message: Message) -> bool:
        if user_id in self.blocked:
            return False
        self.sent.append((user_id, message))
        return True

    def to(self, user_id: int) -> list[Message]:
        """What ``user_id`` was sent, oldest first."""
        return [message for uid, message in self.sent if uid == user_id]
