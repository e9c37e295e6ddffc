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
import ssl
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

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

    tls_sessions: int = 0  # messages that arrived over TLS

    def url_for(self, scheme: str = "smtp") -> str:
        account = f"{quote(USERNAME, safe='')}:{quote(PASSWORD, safe='')}"
        return f"{scheme}://{account}@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.url_for("smtp")

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
        transport = server.transport
        implicit = transport is not None and transport.get_extra_info("ssl_object") is not None
        if session.ssl is not None or implicit:
            self.tls_sessions += 1
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
async def smtp_server(
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    port: int = 0,
) -> AsyncIterator[SmtpServerStandIn]:
    """An SMTP server on a free loopback port, requiring the test account's login.

    ``starttls``: the server offers STARTTLS and refuses mail until the client upgrades
    (a provider's port 587); ``implicit_tls``: TLS from the first byte (port 465)."""
    standin = SmtpServerStandIn()

    def protocol() -> SMTP:
        with warnings.catch_warnings():
            # AUTH without TLS is what this loopback test server is for; aiosmtpd warns.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(
                standin,
                hostname="smtp.test",  # not socket.getfqdn(): no DNS lookup in the loop
                auth_required=True,
                # no certificate in the plain case: AUTH in the clear on loopback
                auth_require_tls=starttls is not None,
                tls_context=starttls,
                require_starttls=starttls is not None,
                authenticator=standin.authenticate,
            )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", port, ssl=implicit_tls)
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


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files; trust it with SSL_CERT_FILE."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context
