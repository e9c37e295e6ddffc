"""What admins see and do from the chat: argument parsing, statistics, booking and user views,
blocking, and the audit trail every admin action leaves.

Everything returned is Telegram HTML. Whatever a traveller or an admin typed passes through
``esc``; passport numbers are only shown masked, emails and phone numbers only in part, money
only through ``Money.format``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from services import texts
from services.flights.dates import format_date, format_day
from services.messages import esc
from services.models import (
    AuditEntry,
    Booking,
    BookingStatus,
    Profile,
    Stats,
    Traveller,
    mask_document,
    mask_email,
    mask_phone,
    utcnow,
)
from services.money import Money, currency_exponent
from services.storage.base import FUNNEL_STAGES, Storage

# Room left under Telegram's 4096 characters for a header or a button row around the text.
VIEW_LIMIT = 3900
MAX_REASON = 200
MAX_EVENTS_SHOWN = 20
MAX_BOOKINGS_SHOWN = 15

USAGE: dict[str, str] = {
    "admin": "/admin",
    "stats": "/stats [today|7d|30d], e.g. /stats 7d",
    "booking": "/booking REF, e.g. /booking K7MP3Q",
    "user": "/user ID or /user @username, e.g. /user 123456789",
    "refund": "/refund REF [amount] [reason], e.g. /refund K7MP3Q or /refund K7MP3Q 25.50 late",
    "ticketed": "/ticketed REF, after issuing a paid booking's ticket by hand",
    "block": "/block ID or /block @username",
    "unblock": "/unblock ID or /unblock @username",
    "broadcast": "/broadcast [message], or /broadcast alone and then write the message",
    "broadcast_cancel": "/broadcast_cancel [broadcast number]",
}

_REFERENCE = re.compile(r"^#?[A-Za-z0-9]{4,12}$")
_USERNAME = re.compile(r"^@?[A-Za-z0-9_]{1,64}$")
_AMOUNT = re.compile(r"^\d{1,9}(?:[.,]\d{1,4})?$")
_USER_ID_MAX = 2**52  # Telegram user ids fit in 52 bits


class AdminInputError(ValueError):
    """Arguments an admin command cannot use. ``str()`` is HTML for the admin."""


def usage(command: str) -> str:
    return f"Usage: {esc(USAGE[command])}"


class Period(enum.StrEnum):
    TODAY = "today"
    WEEK = "7d"
    MONTH = "30d"

    @property
    def label(self) -> str:
        return {"today": "today", "7d": "last 7 days", "30d": "last 30 days"}[self.value]

    def since(self, now: datetime) -> datetime:
        """Start of the period: midnight UTC for today, otherwise a rolling window."""
        if self is Period.TODAY:
            return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return now - timedelta(days=7 if self is Period.WEEK else 30)


def parse_period(args: str) -> Period:
    text = args.strip().lower()
    if not text:
        return Period.TODAY
    aliases = {"7": "7d", "30": "30d", "week": "7d", "month": "30d"}
    try:
        return Period(aliases.get(text, text))
    except ValueError:
        raise AdminInputError(usage("stats")) from None


def parse_reference(args: str, command: str = "booking") -> str:
    parts = args.split()
    if len(parts) != 1 or not _REFERENCE.match(parts[0]):
        raise AdminInputError(usage(command))
    return parts[0].lstrip("#").upper()


def parse_user_target(args: str, command: str) -> int | str:
    """A numeric Telegram id, or a username (returned without '@')."""
    parts = args.split()
    if len(parts) != 1:
        raise AdminInputError(usage(command))
    token = parts[0]
    if token.isdigit():
        user_id = int(token)
        if 0 < user_id < _USER_ID_MAX:
            return user_id
        raise AdminInputError(usage(command))
    if _USERNAME.match(token):
        return token.removeprefix("@")
    raise AdminInputError(usage(command))


@dataclass(frozen=True, slots=True)
class RefundRequest:
    reference: str
    amount: Decimal | None  # major units in the booking's currency; None: in full
    reason: str


def parse_refund(args: str) -> RefundRequest:
    """``REF [amount] [reason]``: an amount is a number such as 25 or 25.50 (comma allowed)."""
    parts = args.split(maxsplit=1)
    if not parts or not _REFERENCE.match(parts[0]):
        raise AdminInputError(usage("refund"))
    reference = parts[0].lstrip("#").upper()
    rest = parts[1].strip() if len(parts) > 1 else ""
    amount: Decimal | None = None
    if rest:
        head, _, tail = rest.partition(" ")
        if _AMOUNT.match(head):
            amount = Decimal(head.replace(",", "."))
            rest = tail.strip()
        elif re.match(r"^[-+]?[\d.,]+$", head):
            raise AdminInputError(
                f"{esc(head)} is not an amount: use a positive number such as 25 or 25.50.\n"
                + usage("refund")
            )
    if len(rest) > MAX_REASON:
        raise AdminInputError(f"The reason is too long: at most {MAX_REASON} characters.")
    return RefundRequest(reference=reference, amount=amount, reason=rest)


def refund_money(amount: Decimal, currency: str) -> Money:
    """The amount in the booking's currency, refusing more decimals than the currency has."""
    exponent = currency_exponent(currency)
    try:
        places = max(-int(amount.as_tuple().exponent), 0)
    except (TypeError, ValueError, InvalidOperation):
        raise AdminInputError(f"{esc(amount)} is not an amount.") from None
    if places > exponent:
        whole = "whole amounts" if exponent == 0 else f"at most {exponent} decimal places"
        raise AdminInputError(f"{currency} takes {whole}: {esc(amount)} can't be refunded.")
    money = Money.from_decimal(amount, currency)
    if money.amount <= 0:
        raise AdminInputError("The refund amount must be more than zero.")
    return money


# views ---------------------------------------------------------------------------------------
def _when(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if moment is not None else "—"


def _percent(part: int, whole: int) -> str:
    if whole <= 0:
        return ""
    return f" ({(part * 100 + whole // 2) // whole}%)"


def fit(lines: Sequence[str], limit: int = VIEW_LIMIT) -> str:
    """Join lines, dropping whole lines at the end so the text stays under ``limit``."""
    out: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit - 2:
            out.append("…")
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


def stats_text(stats: Stats, funnel: dict[str, int], period: Period) -> str:
    total = sum(stats.bookings_by_status.values())
    lines = [f"📊 <b>Stats, {period.label}</b> (since {_when(stats.since)})", ""]
    lines.append(f"<b>Bookings</b>: {total}")
    for status in BookingStatus:
        count = stats.bookings_by_status.get(status, 0)
        if count:
            lines.append(f"  {status.label}: {count}")
    revenue = sorted(stats.revenue, key=lambda money: money.currency)
    shown = ", ".join(money.format() for money in revenue if money.amount) or "none"
    lines.append(f"<b>Revenue</b> (paid and confirmed): {shown}")
    lines.append(f"<b>Searches</b>: {stats.searches}")
    searches = funnel.get("search", 0)
    steps = [f"search {searches}"]
    names = {"chosen": "flight chosen", "reviewed": "reviewed", "paid": "paid"}
    for stage in FUNNEL_STAGES[1:]:
        count = funnel.get(stage, 0)
        steps.append(f"{names[stage]} {count}{_percent(count, searches)}")
    lines.append("<b>Funnel</b>: " + " → ".join(steps))
    lines.append("<b>Top routes</b>:" if stats.top_routes else "<b>Top routes</b>: none")
    for rank, route in enumerate(stats.top_routes, start=1):
        lines.append(f"  {rank}. {esc(route.origin)} → {esc(route.destination)}: {route.count}")
    lines.append(f"<b>New users</b>: {stats.new_users}")
    return fit(lines)


def _traveller_lines(index: int, traveller: Traveller) -> list[str]:
    lines = [
        f"  {index}. {esc(traveller.full_name)} ({traveller.category.value}), born "
        f"{format_date(traveller.birth_date)}, {esc(traveller.nationality)}, passport "
        f"{esc(mask_document(traveller.passport_number))} valid to "
        f"{format_date(traveller.passport_expiry)}"
    ]
    if traveller.email or traveller.phone:
        lines.append(
            f"     contact {esc(mask_email(traveller.email))}, {esc(mask_phone(traveller.phone))}"
        )
    return lines


def who(user_id: int, profile: Profile | None) -> str:
    if profile is None:
        return f"<code>{user_id}</code>"
    name = f" @{esc(profile.username)}" if profile.username else ""
    first = f" ({esc(profile.first_name)})" if profile.first_name else ""
    return f"<code>{user_id}</code>{name}{first}"


def booking_text(
    booking: Booking,
    events: Sequence[tuple[str, str, datetime]],
    owner: Profile | None,
) -> str:
    lines = [
        f"🧾 <b>Booking {esc(booking.reference)}</b> · {booking.status.label} "
        f"(<code>{booking.status.value}</code>)",
        f"User: {who(booking.user_id, owner)}",
        f"Booking id: <code>{esc(booking.id)}</code>",
        f"Amount: <b>{booking.amount.format()}</b> ({booking.amount.amount} minor units "
        f"{booking.amount.currency})",
        *_refund_lines(booking),
        f"Checkout session: <code>{esc(booking.checkout_session_id or '—')}</code>",
        f"Payment intent: <code>{esc(booking.payment_intent_id or '—')}</code>",
        f"Payment deadline: {_when(booking.payment_deadline)}",
        f"Created {_when(booking.created_at)}, updated {_when(booking.updated_at)}",
        f"Provider: {esc(booking.itinerary.provider)}",
        f"Provider order: <code>{esc(booking.provider_order_id or '—')}</code>",
        *texts.airline_lines(booking),
        "",
        *texts.itinerary_lines(booking.itinerary),
        "",
        f"Travellers ({len(booking.travellers)}):",
    ]
    for index, traveller in enumerate(booking.travellers, start=1):
        lines += _traveller_lines(index, traveller)
    lines.append("")
    if events:
        shown = list(events)[-MAX_EVENTS_SHOWN:]
        skipped = len(events) - len(shown)
        lines.append(f"Payment events ({len(events)}):")
        if skipped:
            lines.append(f"  … {skipped} earlier")
        lines += [
            f"  {_when(at)} {esc(kind)} <code>{esc(event_id)}</code>"
            for event_id, kind, at in shown
        ]
    else:
        lines.append("Payment events: none")
    return fit(lines)


def _refund_lines(booking: Booking) -> list[str]:
    """What was given back, when anything was (or is being right now)."""
    if not booking.refunded_minor and not booking.refund_pending_minor:
        return []
    line = f"Refunded: {booking.refunded.format()} of {booking.amount.format()}"
    if booking.refund_pending_minor:
        pending = booking.amount.model_copy(update={"amount": booking.refund_pending_minor})
        line += f", {pending.format()} being refunded now"
    return [line]


def booking_line(booking: Booking) -> str:
    return (
        f"<code>{esc(booking.reference)}</code> {texts.route(booking)} "
        f"{format_day(booking.itinerary.departure)} · {booking.amount.format()} · "
        f"{booking.status.label}"
    )


def user_text(profile: Profile, bookings: Sequence[Booking]) -> str:
    flags = []
    if profile.blocked:
        flags.append("⛔ blocked by an admin")
    if profile.bot_blocked:
        flags.append("🔕 has blocked the bot")
    lines = [
        f"👤 <b>User</b> {who(profile.user_id, profile)}",
        f"Language: {esc(profile.language or '—')}",
        f"First seen: {_when(profile.created_at)}",
        f"Blocked: {'yes' if profile.blocked else 'no'}"
        + (f" ({', '.join(flags)})" if flags else ""),
        f"Saved travellers: {len(profile.saved_travellers)}",
        "",
    ]
    if bookings:
        lines.append(f"Bookings ({len(bookings)} most recent):")
        lines += [f"  {booking_line(b)}" for b in bookings[:MAX_BOOKINGS_SHOWN]]
    else:
        lines.append("Bookings: none")
    return fit(lines)


def open_links_text(bookings: Sequence[Booking]) -> str:
    if not bookings:
        return "They have no open payment links."
    lines = [
        f"⚠️ They still have {len(bookings)} open payment link(s). These were <b>not</b> "
        "cancelled: a payment made on them is still honoured (refund it with /refund if needed):"
    ]
    for booking in bookings:
        lines.append(f"  {booking_line(booking)}, pay by {_when(booking.payment_deadline)}")
    return "\n".join(lines)


# the service ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BlockOutcome:
    profile: Profile
    changed: bool  # False when the flag already had that value
    open_links: tuple[Booking, ...] = ()


class AdminService:
    """Reads and admin-only changes over the storage port; every action is audited."""

    def __init__(self, storage: Storage, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._storage = storage
        self._now = clock

    async def audit(
        self, admin_id: int, action: str, target: str | None = None, **details: Any
    ) -> None:
        await self._storage.append_audit(
            AuditEntry(admin_id=admin_id, action=action, target=target, details=details)
        )

    async def stats(self, period: Period) -> str:
        since = period.since(self._now())
        stats = await self._storage.stats(since)
        funnel = await self._storage.funnel(since)
        return stats_text(stats, funnel, period)

    async def booking(self, reference: str) -> Booking | None:
        return await self._storage.get_booking_by_reference(reference, user_id=None)

    async def booking_view(self, booking: Booking) -> str:
        events = await self._storage.list_payment_events(booking.id)
        owner = await self._storage.get_profile(booking.user_id)
        return booking_text(booking, events, owner)

    async def find_user(self, target: int | str) -> Profile | None:
        if isinstance(target, int):
            return await self._storage.get_profile(target)
        return await self._storage.find_profile_by_username(target)

    async def user_view(self, profile: Profile) -> str:
        bookings = await self._storage.list_bookings(profile.user_id, limit=MAX_BOOKINGS_SHOWN)
        return user_text(profile, bookings)

    async def set_blocked(self, profile: Profile, blocked: bool) -> BlockOutcome:
        """Flip the admin block flag; a block also reports the user's open payment links,
        which stay open on purpose (money may already be on its way)."""
        changed = profile.blocked != blocked
        if changed:
            await self._storage.set_blocked(profile.user_id, blocked)
        links: tuple[Booking, ...] = ()
        if blocked:
            links = tuple(
                await self._storage.list_bookings_by_status(
                    BookingStatus.AWAITING_PAYMENT, user_id=profile.user_id
                )
            )
        return BlockOutcome(
            profile=profile.model_copy(update={"blocked": blocked}),
            changed=changed,
            open_links=links,
        )
