"""A real SMTP server (aiosmtpd) in the test process, on the test's own event loop.

It speaks SMTP as a mail provider's submission port does (EHLO, AUTH LOGIN/PLAIN with the
account in the URL, MAIL, RCPT, DATA) and can be told to refuse recipients or to hold a
message back, so tests see what the bot does when the server says no or is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

USERNAME = "bot@example.com"
PASSWORD = "s3cret/with:odd@chars"


@dataclass
class Received:
    """One message as the server took it: the envelope and the parsed MIME."""

    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class SmtpServerStandIn:
    """What the server received and how it should behave next."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    refuse_recipients: int | None = None  # e.g. 550: every RCPT TO gets this code
    defer_data: int = 0  # answer this many DATA commands with 451 before accepting
    hold: asyncio.Event | None = None  # when set up, DATA waits until it is set
    data_commands: int = 0
    logins: list[tuple[str, str]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        from urllib.parse import quote

        return f"smtp://{quote(USERNAME, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{self.port}"

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until ``count`` messages have been accepted."""
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    # aiosmtpd handler hooks ----------------------------------------------------------------
    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse_recipients is not None:
            return f"{self.refuse_recipients} 5.1.1 <{address}>: Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.data_commands += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.defer_data > 0:
            self.defer_data -= 1
            return "451 4.3.0 Try again later"
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        async with self.arrived:
            self.received.append(
                Received(
                    sender=str(envelope.mail_from),
                    recipients=list(envelope.rcpt_tos),
                    message=parsed,
                )
            )
            self.arrived.notify_all()
        return "250 2.0.0 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = (data.login.decode(), data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == (USERNAME, PASSWORD))


@contextlib.asynccontextmanager
async def smtp_server() -> AsyncIterator[SmtpServerStandIn]:
    """An SMTP server on a free loopback port, requiring the test account's login."""
    standin = SmtpServerStandIn()

    def protocol() -> SMTP:
        with warnings.catch_warnings():
            # AUTH without TLS is what this loopback test server is for; aiosmtpd warns.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(
                standin,
                hostname="smtp.test",  # not socket.getfqdn(): no DNS lookup in the loop
                auth_required=True,
                auth_require_tls=False,  # no certificate here; AUTH in the clear on loopback
                authenticator=standin.authenticate,
            )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", 0)
    standin.port = server.sockets[0].getsockname()[1]
    try:
        yield standin
    finally:
        if standin.hold is not None:
            standin.hold.set()
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """A loopback port nothing listens on (the mail server is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
