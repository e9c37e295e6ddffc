"""The lead traveller's emails, against a real SMTP server (aiosmtpd) in the test process.

The bot is the real one (composition root, PTB on the sandbox Bot API, demo fares, the sandbox
checkout page, SQLite) with ``SMTP_URL`` pointing at the test server; what the server received
is parsed as MIME, and its calendar file with icalendar. The retry tests drive the receipts
hook and the SMTP adapter directly against the same server refusing, deferring or down.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from icalendar import Calendar

from bot.config import SettingsError, load_settings
from services.mail.files import FileSender
from services.mail.receipts import EmailReceipts
from services.mail.smtp import SmtpSender, SmtpServer
from services.models import (
    Booking,
    BookingStatus,
    Gender,
    Itinerary,
    PassengerCategory,
    Segment,
    Traveller,
)
from services.money import Money
from tests.support.botkit import BotKit, running_bot
from tests.support.smtp import (
    PASSWORD,
    USERNAME,
    SmtpServerStandIn,
    closed_port,
    self_signed_certificate,
    server_tls,
    smtp_server,
)
from tests.test_conversation_e2e import to_payment

USER = 9401
EMAIL_FROM = "Travel Bot <bookings@example.com>"
LEAD_EMAIL = "maria@example.com"  # what tests.test_conversation_e2e types
PASSPORT = "CA1234567"


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServerStandIn]:
    async with smtp_server() as server:
        yield server


@pytest.fixture
async def bot(tmp_path: Path, smtp: SmtpServerStandIn) -> AsyncIterator[BotKit]:
    async with running_bot(tmp_path, smtp_url=smtp.url, email_from=EMAIL_FROM) as kit:
        yield kit


async def _pay_on_sandbox_page(bot: BotKit) -> None:
    url = next(
        b.url
        for m in reversed(bot.sandbox.bot_messages(USER))
        for row in m.buttons
        for b in row
        if b.url
    )
    async with aiohttp.ClientSession() as http, http.post(f"{url}/pay") as response:
        assert response.status == 200


async def _booked(bot: BotKit) -> Booking:
    await to_payment(bot, USER)
    reference: str = (await bot.state(USER)).data["booking"]["reference"]
    await _pay_on_sandbox_page(bot)
    await bot.sandbox.wait_for_messages(USER, 1, timeout=15)
    await bot.sandbox.wait_idle(USER, quiet=0.3)
    booking = await bot.runtime.adapters.storage.get_booking_by_reference(reference, user_id=USER)
    assert booking is not None
    assert booking.status is BookingStatus.CONFIRMED
    return booking


def _parts(message: EmailMessage) -> tuple[str, str, bytes | None, str | None]:
    """Plain text, HTML, and the calendar attachment with its file name."""
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None
    assert html is not None
    attachments = [
        part for part in message.iter_attachments() if part.get_content_type() == "text/calendar"
    ]
    calendar = attachments[0].get_payload(decode=True) if attachments else None
    name = attachments[0].get_filename() if attachments else None
    assert calendar is None or isinstance(calendar, bytes)
    return str(plain.get_content()), str(html.get_content()), calendar, name


def _events(data: bytes) -> list[dict[str, object]]:
    calendar = Calendar.from_ical(data)
    return [
        {
            "uid": str(event["UID"]),
            "start": event.decoded("DTSTART"),
            "end": event.decoded("DTEND"),
            "summary": str(event["SUMMARY"]),
            "description": str(event["DESCRIPTION"]),
            "status": str(event["STATUS"]),
        }
        for event in calendar.walk("VEVENT")
    ]


def _assert_flights(events: list[dict[str, object]], booking: Booking) -> None:
    """One event per flight, at its real instant in UTC, named by flight and airports."""
    segments = booking.itinerary.segments
    assert len(events) == len(segments)
    for event, segment in zip(events, segments, strict=True):
        start, end = event["start"], event["end"]
        assert isinstance(start, datetime)
        assert isinstance(end, datetime)
        assert start.utcoffset() == timedelta(0)
        assert start == segment.departure
        assert end == segment.arrival
        summary = str(event["summary"])
        assert segment.flight_number in summary
        assert segment.origin in summary
        assert segment.destination in summary
        assert booking.reference in str(event["description"])


# the confirmation ----------------------------------------------------------------------------
async def test_a_paid_booking_emails_the_lead_traveller_its_flights_as_a_calendar(
    bot: BotKit, smtp: SmtpServerStandIn
) -> None:
    booking = await _booked(bot)

    [received] = await smtp.wait_for(1)
    assert smtp.logins == [(USERNAME, PASSWORD)]  # the account in SMTP_URL
    assert received.recipients == [LEAD_EMAIL]
    message = received.message
    assert message["To"] == LEAD_EMAIL
    assert message["From"] == EMAIL_FROM
    assert booking.reference in str(message["Subject"])
    plain, html, calendar, filename = _parts(message)
    for body in (plain, html):
        assert booking.reference in body
        assert "MARIA SILVA" in body  # as printed in the passport
        assert "Hello Maria," in body
        assert "•••• 4567" in body  # the passport, masked
        assert PASSPORT not in body
        assert booking.amount.format() in body
        for segment in booking.itinerary.segments:
            assert segment.flight_number in body
    assert "<b>" not in plain
    assert filename == f"{booking.reference}.ics"
    assert calendar is not None
    events = _events(calendar)
    _assert_flights(events, booking)
    assert {event["status"] for event in events} == {"CONFIRMED"}

    # The chat's confirmation carries the same flights as a file.
    documents = [m.document for m in bot.sandbox.bot_messages(USER) if m.document is not None]
    [document] = documents
    assert document.file_name == f"{booking.reference}.ics"
    assert document.mime_type == "text/calendar"
    _assert_flights(_events(document.content), booking)


async def test_the_chat_confirmation_does_not_wait_for_the_mail_server(
    bot: BotKit, smtp: SmtpServerStandIn
) -> None:
    smtp.hold = asyncio.Event()  # the server takes the message but does not answer yet

    booking = await _booked(bot)  # confirmed in the chat, with its calendar file

    assert any("Booking confirmed" in m.text for m in bot.sandbox.bot_messages(USER))
    assert smtp.received == []
    assert bot.runtime.receipts is not None
    assert bot.runtime.receipts.pending == 1
    smtp.hold.set()
    [received] = await smtp.wait_for(1)
    assert booking.reference in str(received.message["Subject"])


async def test_a_cancelled_booking_emails_the_refund_and_takes_the_flights_off_the_calendar(
    bot: BotKit, smtp: SmtpServerStandIn
) -> None:
    booking = await _booked(bot)
    [confirmation] = await smtp.wait_for(1)

    await bot.say(USER, "/mybookings")
    await bot.press(USER, booking.reference)
    await bot.press(USER, "Cancel and refund")
    await bot.press(USER, "Yes, cancel and refund")

    _, refund = await smtp.wait_for(2)
    assert refund.recipients == [LEAD_EMAIL]
    assert "refunded" in str(refund.message["Subject"]).lower()
    plain, _, calendar, _ = _parts(refund.message)
    assert booking.reference in plain
    assert booking.amount.format() in plain
    assert calendar is not None
    assert Calendar.from_ical(calendar)["METHOD"] == "CANCEL"
    cancelled = _events(calendar)
    assert {event["status"] for event in cancelled} == {"CANCELLED"}
    _, _, first_calendar, _ = _parts(confirmation.message)
    assert first_calendar is not None
    # The same events, so a calendar that has them removes them.
    assert [e["uid"] for e in cancelled] == [e["uid"] for e in _events(first_calendar)]


async def test_a_refused_email_reaches_the_admins_in_their_chat(
    tmp_path: Path, smtp: SmtpServerStandIn
) -> None:
    admin = 7001
    smtp.refuse_recipients = 550
    async with running_bot(
        tmp_path, smtp_url=smtp.url, email_from=EMAIL_FROM, admin_ids=str(admin)
    ) as bot:
        await bot.say(admin, "/start")
        booking = await _booked(bot)
        assert bot.runtime.receipts is not None
        await bot.runtime.receipts.drain()
        await bot.sandbox.wait_idle(admin, quiet=0.3)
        alerts = [m.text for m in bot.sandbox.bot_messages(admin) if "email" in m.text]

    [alert] = alerts
    assert booking.reference in alert
    assert "550" in alert
    assert LEAD_EMAIL not in alert
    assert smtp.received == []


async def test_the_embedded_default_writes_the_email_as_an_eml_file(tmp_path: Path) -> None:
    async with running_bot(tmp_path, smtp_url=None) as bot:
        booking = await _booked(bot)
        assert bot.runtime.receipts is not None
        await bot.runtime.receipts.drain()

    [path] = (tmp_path / "outbox").glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == LEAD_EMAIL
    _, _, calendar, _ = _parts(message)
    assert calendar is not None
    _assert_flights(_events(calendar), booking)


# failures: refused, deferred, down -----------------------------------------------------------
def _booking() -> Booking:
    lisbon, tokyo = ZoneInfo("Europe/Lisbon"), ZoneInfo("Asia/Tokyo")
    itinerary = Itinerary(
        id="demo-1",
        provider="demo",
        segments=(
            Segment(
                carrier="TP",
                flight_number="TP1234",
                origin="LIS",
                destination="NRT",
                departure=datetime(2027, 1, 20, 10, 35, tzinfo=lisbon),
                arrival=datetime(2027, 1, 21, 6, 20, tzinfo=tokyo),
            ),
        ),
        price=Money(amount=123_400, currency="EUR"),
    )
    lead = Traveller(
        category=PassengerCategory.ADULT,
        first_name="Maria",
        last_name="Silva",
        birth_date=date(1990, 5, 17),
        gender=Gender.FEMALE,
        nationality="PT",
        passport_number=PASSPORT,
        passport_expiry=date(2031, 8, 20),
        email=LEAD_EMAIL,
        phone="+351912345678",
    )
    now = datetime.now(UTC)
    return Booking(
        id="b-1",
        reference="K7QW2P",
        user_id=USER,
        itinerary=itinerary,
        travellers=(lead,),
        amount=itinerary.price,
        status=BookingStatus.CONFIRMED,
        created_at=now,
        updated_at=now,
    )


_BOOKINGS: dict[str, Booking] = {}


async def _stored(booking_id: str) -> Booking | None:
    """What the email job loads: the booking the test last handed to the receipts."""
    return _BOOKINGS.get(booking_id)


def _handed(booking: Booking) -> Booking:
    _BOOKINGS[booking.id] = booking
    return booking


def _receipts(
    url: str, alerts: list[str], attempts: int = 3, first_retry: float = 0.01
) -> EmailReceipts:
    async def alert(text: str) -> None:
        alerts.append(text)

    return EmailReceipts(
        SmtpSender(SmtpServer.from_url(url), timeout=5),
        sender_address=EMAIL_FROM,
        load=_stored,
        alert_admins=alert,
        attempts=attempts,
        first_retry=first_retry,
        longest_wait=max(first_retry * 4, 0.05),
    )


def _no_personal_data(caplog: pytest.LogCaptureFixture, alerts: list[str]) -> None:
    """Nothing the bot logged or alerted names the traveller (the test server's own log,
    ``mail.log``, is not the bot's)."""
    ours = [r for r in caplog.records if not r.name.startswith("mail.")]
    said = "\n".join([f"{r.getMessage()} {r.exc_text or ''}" for r in ours] + alerts)
    assert said.strip()
    for secret in (LEAD_EMAIL, PASSPORT, "+351912345678", "1990-05-17", "Silva"):
        assert secret not in said


async def test_the_utc_times_of_a_known_flight(smtp: SmtpServerStandIn) -> None:
    """Lisbon 10:35 in January is 10:35 UTC; Tokyo 06:20 the next day is 21:20 UTC."""
    alerts: list[str] = []
    receipts = _receipts(smtp.url, alerts)
    receipts.confirmed(_handed(_booking()))
    await receipts.drain()

    [received] = smtp.received
    _, _, calendar, _ = _parts(received.message)
    assert calendar is not None
    [event] = _events(calendar)
    assert event["start"] == datetime(2027, 1, 20, 10, 35, tzinfo=UTC)
    assert event["end"] == datetime(2027, 1, 20, 21, 20, tzinfo=UTC)
    assert event["summary"] == "Flight TP1234 LIS → NRT"
    assert "K7QW2P" in str(event["description"])
    assert alerts == []


async def test_a_refused_recipient_is_not_retried_and_the_admins_are_told(
    smtp: SmtpServerStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    smtp.refuse_recipients = 550
    alerts: list[str] = []
    receipts = _receipts(smtp.url, alerts)

    receipts.confirmed(_handed(_booking()))
    await receipts.drain()

    assert smtp.received == []
    assert len(smtp.logins) == 1  # one try: a 5xx is final
    [alert] = alerts
    assert "K7QW2P" in alert
    assert "550" in alert
    assert "refused" in caplog.text
    _no_personal_data(caplog, alerts)


async def test_a_mail_server_that_is_down_is_retried_then_given_up_with_an_alert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    alerts: list[str] = []
    receipts = _receipts(f"smtp://127.0.0.1:{closed_port()}", alerts, attempts=3)

    receipts.confirmed(_handed(_booking()))
    await receipts.drain()

    assert caplog.text.count("retrying in") == 2
    [alert] = alerts
    assert "K7QW2P" in alert
    assert "3 tries" in alert
    assert "given up after 3 tries" in caplog.text
    _no_personal_data(caplog, alerts)


async def test_a_mail_server_that_comes_back_gets_the_email(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # the receipts' INFO lines reach handlers
    port = closed_port()
    alerts: list[str] = []
    # 0.2 s before the second try: room to start the server once the first has failed.
    receipts = _receipts(SmtpServerStandIn(port=port).url, alerts, attempts=6, first_retry=0.2)

    first_try_failed = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying in" in record.getMessage():
                first_try_failed.set()

    watch = Watch()
    # The retries are the job queue's (services/jobs), which logs them.
    logging.getLogger("services.jobs").addHandler(watch)
    try:
        receipts.confirmed(_handed(_booking()))
        async with asyncio.timeout(15):
            await first_try_failed.wait()  # the port was closed
    finally:
        logging.getLogger("services.jobs").removeHandler(watch)
    async with smtp_server(port=port) as server:
        await receipts.drain()
        [received] = server.received

    assert received.recipients == [LEAD_EMAIL]
    assert alerts == []


async def test_a_server_that_says_try_later_gets_the_email_on_a_later_try(
    smtp: SmtpServerStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    smtp.defer_data = 2  # 451 twice, then accepted
    alerts: list[str] = []
    receipts = _receipts(smtp.url, alerts, attempts=3)

    receipts.confirmed(_handed(_booking()))
    await receipts.drain()

    [received] = smtp.received
    assert received.recipients == [LEAD_EMAIL]
    assert smtp.data_commands == 3
    assert alerts == []
    assert "sent (smtp)" in caplog.text
    _no_personal_data(caplog, alerts)


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
async def test_tls_starttls_when_offered_and_smtps_from_the_first_byte(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """smtp:// upgrades with STARTTLS when the server offers it (this one refuses mail
    without); smtps:// speaks TLS from the start. The certificate is checked."""
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this test certificate
    tls = server_tls(cert, key)
    starttls, implicit = (tls, None) if scheme == "smtp" else (None, tls)
    async with smtp_server(starttls=starttls, implicit_tls=implicit) as server:
        alerts: list[str] = []
        receipts = _receipts(server.url_for(scheme), alerts, attempts=1)
        receipts.confirmed(_handed(_booking()))
        await receipts.drain()
        assert alerts == []
        [received] = server.received
        assert received.recipients == [LEAD_EMAIL]
        assert server.tls_sessions == 1
        assert server.logins == [(USERNAME, PASSWORD)]


async def test_a_partial_refund_says_the_booking_stands_and_sends_no_calendar(
    smtp: SmtpServerStandIn,
) -> None:
    receipts = _receipts(smtp.url, [])
    receipts.refunded(_handed(_booking()), Money(amount=2_000, currency="EUR"), full=False)
    await receipts.drain()

    [received] = smtp.received
    plain, _, calendar, _ = _parts(received.message)
    assert "€20.00" in plain
    assert "stands" in plain
    assert calendar is None


async def test_no_address_means_no_email_and_no_alert(smtp: SmtpServerStandIn) -> None:
    booking = _booking()
    lead = booking.travellers[0].model_copy(update={"email": None})
    alerts: list[str] = []
    receipts = _receipts(smtp.url, alerts)
    receipts.confirmed(_handed(booking.model_copy(update={"travellers": (lead,)})))
    await receipts.drain()
    assert smtp.received == []
    assert smtp.logins == []
    assert alerts == []


async def test_the_file_sender_writes_whole_messages_and_says_where(tmp_path: Path) -> None:
    written: list[Path] = []
    receipts = EmailReceipts(
        FileSender(tmp_path / "outbox", on_written=written.append),
        sender_address=EMAIL_FROM,
        load=_stored,
    )
    receipts.confirmed(_handed(_booking()))
    await receipts.drain()
    [path] = written
    assert path.parent == tmp_path / "outbox"
    assert path.suffix == ".eml"
    assert list((tmp_path / "outbox").iterdir()) == [path]  # no partial file left behind
    assert b"K7QW2P" in path.read_bytes()


# settings ------------------------------------------------------------------------------------
@pytest.fixture
def no_email_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env
    for name in ("SMTP_URL", "EMAIL_FROM", "EMAIL_OUTBOX_DIR", "SQLITE_PATH"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_email_env")
@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({"smtp_url": "http://mail.example.com"}, "SMTP_URL: expected a URL starting with smtp://"),
        ({"smtp_url": "smtp://user:hunter2@"}, "SMTP_URL: expected a host"),
        ({"smtp_url": "smtp://user:hunter2@mail.example.com:99999"}, "SMTP_URL: the port must"),
        ({"smtp_url": "smtp://mail.example.com"}, "EMAIL_FROM: required when SMTP_URL is set"),
        ({"email_from": "not an address"}, "EMAIL_FROM: expected an address"),
    ],
)
def test_a_bad_email_setting_is_one_line_naming_it(settings: dict[str, str], line: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**settings)
    assert str(caught.value).startswith(line)
    assert "hunter2" not in str(caught.value)


@pytest.mark.usefixtures("no_email_env")
def test_email_settings_choose_the_sender() -> None:
    embedded = load_settings(sqlite_path="state/bot.sqlite3")
    assert not embedded.uses_smtp
    assert embedded.outbox_dir == Path("state/outbox")
    smtp = load_settings(smtp_url="smtps://u:p@mail.example.com", email_from="a@example.com")
    assert smtp.uses_smtp
    assert smtp.smtp_url is not None
    server = SmtpServer.from_url(smtp.smtp_url.get_secret_value())
    assert (server.host, server.port, server.implicit_tls) == ("mail.example.com", 465, True)
    assert SmtpServer.from_url("smtp://mail.example.com").port == 587
