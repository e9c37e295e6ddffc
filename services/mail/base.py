"""The port a service sends email through, and the two ways sending fails.

Errors carry the SMTP code and what went wrong, never the server's own words: a refusal often
repeats the recipient's address, and these errors end up in log lines and admin alerts.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol


class EmailError(Exception):
    """Sending failed. ``str()`` names no address and quotes nothing the server said."""


class EmailRejectedError(EmailError):
    """Refused for good (an SMTP 5xx, a setting the server will not accept): retrying the
    same message cannot help."""


class EmailUnavailableError(EmailError):
    """Not sent this time (server down or unreachable, a timeout, an SMTP 4xx): worth
    trying again later."""


class EmailSender(Protocol):
    """Where confirmation emails go: an SMTP server, or files in a folder."""

    @property
    def name(self) -> str: ...

    @property
    def where(self) -> str:
        """Where messages go, for people (no credentials): 'smtp.example.com:587'."""
        ...

    async def send(self, message: EmailMessage) -> None:
        """Hand ``message`` over (its own From, To and Subject headers say who and what);
        raises ``EmailRejectedError`` or ``EmailUnavailableError``."""
        ...

    async def ping(self) -> None:
        """Check the destination takes mail at all (``travelbot doctor``)."""
        ...

    async def close(self) -> None: ...
