"""Sending over SMTP with aiosmtplib, one connection per message.

``smtp://user:pass@host:587`` connects in plain text and upgrades with STARTTLS whenever the
server offers it; ``smtps://host:465`` speaks TLS from the first byte. Confirmations are a few
a minute at most, so a connection per message costs little and leaves nothing half open.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import getaddresses, parseaddr
from urllib.parse import unquote, urlsplit

import aiosmtplib

from services.mail.base import EmailError, EmailRejectedError, EmailUnavailableError

DEFAULT_PORTS = {"smtp": 587, "smtps": 465}
SCHEMES = tuple(DEFAULT_PORTS)


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how to connect, read from an ``SMTP_URL``."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """Raises ``ValueError`` naming what is wrong (never echoing the password)."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError("expected a URL starting with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("expected a host, e.g. smtp://user:pass@smtp.example.com:587")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        return cls(
            host=parts.hostname,
            port=port,
            implicit_tls=parts.scheme == "smtps",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class SmtpSender:
    """``EmailSender`` over SMTP."""

    name = "smtp"

    def __init__(
        self, server: SmtpServer, *, local_hostname: str | None = None, timeout: float = 30.0
    ) -> None:
        self._server = server
        # Named explicitly: aiosmtplib would otherwise ask socket.getfqdn(), a blocking DNS
        # lookup inside the event loop.
        self._local_hostname = local_hostname or "localhost"
        self._timeout = timeout

    @property
    def where(self) -> str:
        return f"{self._server.host}:{self._server.port}"

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self._server.host,
            port=self._server.port,
            username=self._server.username,
            password=self._server.password,
            use_tls=self._server.implicit_tls,
            start_tls=False if self._server.implicit_tls else None,  # None: when offered
            local_hostname=self._local_hostname,
            timeout=self._timeout,
        )

    async def send(self, message: EmailMessage) -> None:
        sender, recipients = _envelope(message)
        # Flattened off the event loop: the stdlib takes milliseconds for a message this size.
        data = await asyncio.to_thread(message.as_bytes, policy=SMTP_POLICY)
        client = self._client()
        try:
            async with client:
                await client.sendmail(sender, recipients, data)
        except aiosmtplib.SMTPException as error:
            raise _classified(error) from None
        except OSError as error:  # refused, unreachable, reset, TLS failures
            raise EmailUnavailableError(
                f"the mail server {self.where} is unreachable ({type(error).__name__})"
            ) from None

    async def ping(self) -> None:
        client = self._client()
        try:
            async with client:
                await client.noop()
        except aiosmtplib.SMTPException as error:
            raise _classified(error) from None
        except OSError as error:
            raise EmailUnavailableError(
                f"the mail server {self.where} is unreachable ({type(error).__name__})"
            ) from None

    async def close(self) -> None:
        return None


def _envelope(message: EmailMessage) -> tuple[str, list[str]]:
    """MAIL FROM and RCPT TO from the message's own From and To headers."""
    sender = parseaddr(str(message["From"] or ""))[1]
    recipients = [address for _, address in getaddresses(message.get_all("To", [])) if address]
    if not sender or not recipients:
        raise EmailRejectedError("the message has no sender or no recipient")
    return sender, recipients


def _classified(error: aiosmtplib.SMTPException) -> EmailError:
    """Permanent or worth retrying, by the SMTP reply code; the server's text is dropped."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = sorted({refused.code for refused in error.recipients})
        shown = "/".join(str(code) for code in codes)
        if codes and all(code >= 500 for code in codes):
            return EmailRejectedError(f"the mail server refused the recipient (SMTP {shown})")
        return EmailUnavailableError(f"the mail server deferred the recipient (SMTP {shown})")
    if isinstance(error, aiosmtplib.SMTPResponseException):
        what = _STEP.get(type(error), "the message")
        if error.code >= 500:
            return EmailRejectedError(f"the mail server refused {what} (SMTP {error.code})")
        return EmailUnavailableError(f"the mail server deferred {what} (SMTP {error.code})")
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        return EmailRejectedError("the mail server does not support what SMTP_URL asks for")
    return EmailUnavailableError(f"the mail server did not answer ({type(error).__name__})")


_STEP: dict[type[aiosmtplib.SMTPException], str] = {
    aiosmtplib.SMTPRecipientRefused: "the recipient",
    aiosmtplib.SMTPSenderRefused: "the sender (EMAIL_FROM)",
    aiosmtplib.SMTPAuthenticationError: "the login in SMTP_URL",
    aiosmtplib.SMTPDataError: "the message",
    aiosmtplib.SMTPHeloError: "our greeting",
    aiosmtplib.SMTPConnectResponseError: "the connection",
}
