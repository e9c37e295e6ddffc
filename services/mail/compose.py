"""The emails a lead traveller gets: booking confirmed, money refunded.

Each is plain text with an HTML alternative; a confirmation carries the flights as an ``.ics``
file, and a full refund a cancelling ``.ics`` that removes them from the calendar again. The
wording reuses the chat's (services.texts), so both say the same; passports are only ever
shown masked.
"""

from __future__ import annotations

import html
import re
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from services import texts
from services.flights.dates import format_day
from services.mail.ics import MIME_TYPE, airline_reference, booking_calendar, calendar_filename
from services.models import Booking, utcnow
from services.money import Money

_TAG = re.compile(r"<[^>]+>")


def lead_email(booking: Booking) -> str | None:
    """Where the booking's emails go: the lead (first) traveller's address, if given."""
    return booking.travellers[0].email if booking.travellers else None


def confirmation_email(booking: Booking, *, sender: str) -> EmailMessage | None:
    """'Booking confirmed' with the itinerary, references, travellers, amount and .ics."""
    recipient = lead_email(booking)
    if recipient is None:
        return None
    first = booking.itinerary.outbound[0]
    lines = [
        f"Hello {html.escape(booking.travellers[0].first_name.title())},",
        "",
        "Your booking is confirmed.",
        "",
        *_references(booking),
        "",
        *texts.itinerary_lines(booking.itinerary),
        "",
        "Travellers:",
        *(f"  {texts.traveller_line(t)}" for t in booking.travellers),
        "",
        f"Amount paid: <b>{booking.amount.format()}</b>",
        "",
        f"The attached {calendar_filename(booking)} puts each flight in your calendar. "
        "Times above are local to each airport.",
        *_demo_lines(booking),
    ]
    message = _message(
        booking,
        sender=sender,
        recipient=recipient,
        subject=(
            f"Booking confirmed: {booking.reference} · {texts.route(booking)}, "
            f"{format_day(first.departure)}"
        ),
        lines=lines,
    )
    _attach_calendar(message, booking, cancelled=False)
    return message


def refund_email(
    booking: Booking, refunded: Money, *, full: bool, sender: str
) -> EmailMessage | None:
    """A refund: in full (the booking is cancelled, with a cancelling .ics) or in part."""
    recipient = lead_email(booking)
    if recipient is None:
        return None
    if full:
        what = [
            f"Booking <b>{html.escape(booking.reference)}</b> is cancelled and "
            f"<b>{refunded.format()}</b> has been refunded to the card you paid with.",
        ]
    else:
        what = [
            f"A partial refund of <b>{refunded.format()}</b> has been sent for booking "
            f"<b>{html.escape(booking.reference)}</b>. The booking itself stands.",
        ]
    lines = [
        f"Hello {html.escape(booking.travellers[0].first_name.title())},",
        "",
        *what,
        "Banks usually show a refund within 5–10 days.",
        "",
        *_references(booking),
        "",
        *texts.itinerary_lines(booking.itinerary),
        "",
        f"Amount paid: {booking.amount.format()}",
    ]
    if full:
        lines += [
            "",
            f"The attached {calendar_filename(booking)} removes these flights from your calendar.",
        ]
    message = _message(
        booking,
        sender=sender,
        recipient=recipient,
        subject=(
            f"{'Booking cancelled and refunded' if full else 'Partial refund'}: "
            f"{booking.reference} · {refunded.format()}"
        ),
        lines=lines,
    )
    if full:
        _attach_calendar(message, booking, cancelled=True)
    return message


def _references(booking: Booking) -> list[str]:
    lines = [f"Booking reference: <b>{html.escape(booking.reference)}</b>"]
    pnr = airline_reference(booking)
    if pnr:
        lines.append(f"Airline reference: <b>{html.escape(pnr)}</b>")
    return lines


def _demo_lines(booking: Booking) -> list[str]:
    if not booking.itinerary.is_demo:
        return []
    return ["", "<i>Demo fare: no real ticket is issued.</i>"]


def _message(
    booking: Booking, *, sender: str, recipient: str, subject: str, lines: list[str]
) -> EmailMessage:
    """Plain text first, the HTML alternative second; both from the same chat-HTML lines."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(idstring=booking.reference, domain=sender_domain(sender))
    message.set_content("\n".join(_plain(line) for line in lines) + "\n")
    # The lines keep their indentation and breaks (pre-wrap), as in the chat.
    body = "\n".join(lines)
    message.add_alternative(
        '<!doctype html>\n<html><body><div style="font-family: sans-serif; '
        f'white-space: pre-wrap">{body}</div></body></html>\n',
        subtype="html",
    )
    return message


def _attach_calendar(message: EmailMessage, booking: Booking, *, cancelled: bool) -> None:
    maintype, subtype = MIME_TYPE.split("/")
    message.add_attachment(
        booking_calendar(booking, cancelled=cancelled),
        maintype=maintype,
        subtype=subtype,
        filename=calendar_filename(booking),
        params={"method": "CANCEL" if cancelled else "PUBLISH"},
    )


def _plain(line: str) -> str:
    """A line of the chat's HTML as plain text (tags dropped, entities decoded)."""
    return html.unescape(_TAG.sub("", line))


def sender_domain(sender: str) -> str:
    """The domain of EMAIL_FROM ('Travel <bookings@example.com>' or 'bookings@example.com')."""
    domain = parseaddr(sender)[1].rpartition("@")[2]
    return domain or "localhost"
