"""What the booking service tells travellers and admins.

Messages and admin alerts are Telegram HTML: everything a traveller typed goes through ``esc``;
passport numbers are only ever shown masked; prices through ``Money.format``. Refusals (the text
of the booking service's errors) are plain text for the caller to escape. Buttons use the global
actions the handlers route in any conversation state: ``!booking`` opens a booking, ``!renew``
sends a fresh payment link.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.flights.dates import format_day, format_duration
from services.flights.format import day_offset, stops_text
from services.messages import Button, Message, esc
from services.models import Booking, Itinerary, Segment, Traveller
from services.money import Money


# formatting (the search flow's helpers, so dates and durations read the same everywhere) -----
def day(value: date | datetime) -> str:
    """'Fri 12 Mar' ('Tue 4 Jan 2028' in another year)."""
    return format_day(value.date() if isinstance(value, datetime) else value)


def duration(value: timedelta) -> str:
    """'14h 05m'; '45m' under an hour."""
    return format_duration(value)


def deadline(value: datetime) -> str:
    """'14:35 UTC': travellers' time zones are unknown, so say which one."""
    return f"{value.astimezone(UTC):%H:%M} UTC"


def _segment_line(segment: Segment) -> str:
    offset = day_offset(segment.departure, segment.arrival)
    arrival = f"{segment.arrival:%H:%M}" + (f" {offset}" if offset else "")
    return (
        f"{segment.departure:%H:%M} {esc(segment.origin)} → {arrival} "
        f"{esc(segment.destination)} · {esc(segment.flight_number)}"
    )


def _direction(title: str, segments: tuple[Segment, ...]) -> list[str]:
    first, last = segments[0], segments[-1]
    head = (
        f"{title} <b>{esc(first.origin)} → {esc(last.destination)}</b> · "
        f"{day(first.departure)} · {duration(last.arrival - first.departure)}, "
        f"{esc(stops_text(segments))}"
    )
    return [head, *(f"  {_segment_line(s)}" for s in segments)]


def itinerary_lines(itinerary: Itinerary) -> list[str]:
    lines = _direction("✈️", itinerary.outbound)
    if itinerary.inbound:
        lines += _direction("↩️", itinerary.inbound)
    return lines


def traveller_line(traveller: Traveller) -> str:
    return (
        f"{esc(traveller.full_name)} ({traveller.category.value}) · passport "
        f"{esc(traveller.passport_masked)}"
    )


def route(booking: Booking) -> str:
    arrow = " ⇄ " if booking.itinerary.inbound else " → "
    return f"{booking.origin}{arrow}{booking.destination}"


def _open_button(booking: Booking) -> Button:
    return Button(label="View booking", action="!booking", arg=booking.reference)


def _renew_button(booking: Booking) -> Button:
    return Button(label="Get a new payment link", action="!renew", arg=booking.reference)


def _demo_note(booking: Booking) -> str:
    return "\n<i>Demo fare: no real ticket is issued.</i>" if booking.itinerary.is_demo else ""


# messages to the traveller -----------------------------------------------------------------
def confirmation(booking: Booking) -> Message:
    lines = [
        "✅ <b>Booking confirmed</b>",
        f"Reference: <b>{esc(booking.reference)}</b>",
        "",
        *itinerary_lines(booking.itinerary),
        "",
        "Travellers:",
        *(f"  {traveller_line(t)}" for t in booking.travellers),
        f"Paid: <b>{booking.amount.format()}</b>",
    ]
    return Message(
        text="\n".join(lines) + _demo_note(booking),
        buttons=((_open_button(booking),),),
    )


def payment_received_ticket_pending(booking: Booking) -> Message:
    return Message(
        text=(
            f"💳 Payment of <b>{booking.amount.format()}</b> received for booking "
            f"<b>{esc(booking.reference)}</b> ({route(booking)}, "
            f"{day(booking.itinerary.departure)}).\n"
            "Issuing the ticket is taking a little longer than usual. You don't need to do "
            "anything: I'll message you here as soon as it is confirmed."
        ),
        buttons=((_open_button(booking),),),
    )


def link_expired(booking: Booking) -> Message:
    return Message(
        text=(
            f"⌛ The payment link for booking <b>{esc(booking.reference)}</b> "
            f"({route(booking)}, {day(booking.itinerary.departure)}) has expired and nothing "
            "was charged.\nTap below for a new link: I'll check the fare is still available "
            "at the same price first."
        ),
        buttons=((_renew_button(booking),),),
    )


def payment_failed(booking: Booking) -> Message:
    return Message(
        text=(
            f"❌ The payment for booking <b>{esc(booking.reference)}</b> did not go through, "
            "and nothing was charged.\nYou can try again with another payment method."
        ),
        buttons=((_renew_button(booking),),),
    )


def ticketing_failed_refunded(booking: Booking, refunded: Money) -> Message:
    return Message(
        text=(
            f"😞 Sorry: the airline could not issue the ticket for booking "
            f"<b>{esc(booking.reference)}</b> ({route(booking)}, "
            f"{day(booking.itinerary.departure)}).\n"
            f"Your payment of <b>{refunded.format()}</b> has been refunded in full; banks "
            "usually show it within 5–10 days.\n/start to search for another flight."
        ),
        buttons=((_open_button(booking),),),
    )


def ticketing_failed_refund_pending(booking: Booking) -> Message:
    return Message(
        text=(
            f"😞 Sorry: the airline could not issue the ticket for booking "
            f"<b>{esc(booking.reference)}</b>.\nYour payment of "
            f"<b>{booking.amount.format()}</b> will be refunded in full: our team has been "
            "alerted and will confirm it here."
        ),
        buttons=((_open_button(booking),),),
    )


def cancelled_refunded(booking: Booking, refunded: Money) -> Message:
    return Message(
        text=(
            f"Booking <b>{esc(booking.reference)}</b> ({route(booking)}, "
            f"{day(booking.itinerary.departure)}) is cancelled.\n"
            f"<b>{refunded.format()}</b> is on its way back to your card; banks usually show "
            "it within 5–10 days."
        ),
        buttons=((_open_button(booking),),),
    )


def refund_issued(booking: Booking, refunded: Money, *, full: bool) -> Message:
    what = "Your booking has been cancelled and refunded" if full else "A partial refund"
    return Message(
        text=(
            f"💸 {what}: <b>{refunded.format()}</b> for booking "
            f"<b>{esc(booking.reference)}</b> ({route(booking)}, "
            f"{day(booking.itinerary.departure)}).\nBanks usually show it within 5–10 days."
        ),
        buttons=((_open_button(booking),),),
    )


def duplicate_payment_refunded(booking: Booking, refunded: Money) -> Message:
    return Message(
        text=(
            f"You paid twice for booking <b>{esc(booking.reference)}</b>. The second "
            f"payment of <b>{refunded.format()}</b> has been refunded."
        ),
        buttons=((_open_button(booking),),),
    )


def booking_detail(booking: Booking) -> str:
    """A booking as '/mybookings' shows it: status, itinerary, travellers (masked), amount."""
    lines = [
        f"<b>Booking {esc(booking.reference)}</b> · {booking.status.label}",
        "",
        *itinerary_lines(booking.itinerary),
        "",
        "Travellers:",
        *(f"  {traveller_line(t)}" for t in booking.travellers),
        f"Total: <b>{booking.amount.format()}</b>",
    ]
    if booking.payment_deadline is not None and booking.status.value == "awaiting_payment":
        lines.append(f"Pay by {deadline(booking.payment_deadline)}")
    return "\n".join(lines)


# refusals: str() of the booking service's errors, in plain text (callers escape) --------
def no_such_booking(reference: str) -> str:
    return f"I can't find a booking with reference {reference}. Check /mybookings."


def cannot_cancel(booking: Booking) -> str:
    reasons = {
        "draft": "it was never paid, so there is nothing to cancel",
        "awaiting_payment": "it is not paid yet: use “Cancel this booking” on the payment "
        "message instead, nothing is charged",
        "paid": "its ticket is still being issued; try again in a few minutes",
        "expired": "its payment link expired and nothing was charged",
        "failed": "its ticket could not be issued and it is being refunded",
        "cancelled": "it is already cancelled",
        "refunded": "it is already cancelled and refunded",
    }
    why = reasons.get(booking.status.value, f"it is {booking.status.label.lower()}")
    return f"Booking {booking.reference} can't be cancelled: {why}."


def already_departed(booking: Booking) -> str:
    return (
        f"Booking {booking.reference} can't be changed: the flight left on "
        f"{day(booking.itinerary.departure)}."
    )


def cannot_renew(booking: Booking) -> str:
    return (
        f"Booking {booking.reference} is {booking.status.label.lower()}: there is no "
        "payment to make."
    )


def already_paid(booking: Booking) -> str:
    return f"Booking {booking.reference} is already paid: the confirmation follows here shortly."


def fare_gone(booking: Booking) -> str:
    return (
        f"The fare for booking {booking.reference} is no longer available. /start to search again."
    )


def fare_changed(booking: Booking, new_price: Money) -> str:
    return (
        f"The fare for booking {booking.reference} has changed from "
        f"{booking.amount.format()} to {new_price.format()}. /start to search again and "
        "book at the new price."
    )


def nothing_to_refund(booking: Booking) -> str:
    return (
        f"Nothing to refund on booking {booking.reference}: it is {booking.status.label.lower()}."
    )


def refund_too_large(booking: Booking, amount: Money) -> str:
    return (
        f"{amount.format()} is more than booking {booking.reference} was paid "
        f"({booking.amount.format()})."
    )


def refund_failed_user(booking: Booking) -> str:
    return (
        f"Booking {booking.reference} is cancelled, but the refund could not be sent "
        "just now. Our team has been alerted and will confirm it here."
    )


# admin alerts ------------------------------------------------------------------------------
def alert_manual_ticketing(booking: Booking, provider_booking_id: str) -> str:
    return (
        f"⚠️ Booking {esc(booking.reference)} is paid ({booking.amount.format()}) but needs "
        f"manual ticketing with {esc(booking.itinerary.provider)} "
        f"(provider booking {esc(provider_booking_id)}). It stays 'paid' until done."
    )


def alert_ticketing_unavailable(booking: Booking, error: str) -> str:
    return (
        f"⚠️ Booking {esc(booking.reference)} is paid ({booking.amount.format()}) but the "
        f"provider did not answer while ticketing: {esc(error)}. It stays 'paid' and ticketing "
        "is tried again every few minutes; check with the provider before refunding (the "
        "ticket may exist)."
    )


def alert_refund_failed(booking: Booking, error: str) -> str:
    return (
        f"🚨 Refund for booking {esc(booking.reference)} ({booking.amount.format()}) failed: "
        f"{esc(error)}. Status {booking.status.value}; refund it by hand or retry /refund."
    )


def alert_duplicate_payment(booking: Booking, payment_intent: str, refunded: bool) -> str:
    outcome = "refunded automatically" if refunded else "NOT refunded: refund it by hand"
    return (
        f"⚠️ Second payment {esc(payment_intent)} for booking {esc(booking.reference)}: {outcome}."
    )


def alert_refunded_outside(booking: Booking) -> str:
    return (
        f"⚠️ Booking {esc(booking.reference)} ({booking.status.value}) was refunded in full "
        "outside the bot (Stripe dashboard?). The ticket may still need cancelling."
    )


def alert_fulfilment_crashed(booking: Booking, error: str) -> str:
    return (
        f"🚨 Booking {esc(booking.reference)} is paid but fulfilment stopped with an "
        f"unexpected error: {esc(error)}. It stays 'paid'."
    )


# payment reconciliation (issue 12: money is never lost or given away) ------------------------
def other_amount_refunded(booking: Booking, paid: Money) -> Message:
    return Message(
        text=(
            f"↩️ The payment of <b>{paid.format()}</b> for booking "
            f"<b>{esc(booking.reference)}</b> ({route(booking)}) did not match the fare of "
            f"<b>{booking.amount.format()}</b>, so nothing was booked and it has been refunded "
            "in full; banks usually show it within 5–10 days.\nTap below for a new payment "
            "link at the fare's price."
        ),
        buttons=((_renew_button(booking),),),
    )


def other_amount_refund_pending(booking: Booking, paid: Money) -> Message:
    return Message(
        text=(
            f"↩️ The payment of <b>{paid.format()}</b> for booking "
            f"<b>{esc(booking.reference)}</b> did not match the fare of "
            f"<b>{booking.amount.format()}</b>, so nothing was booked. It will be refunded in "
            "full: our team has been alerted and will confirm it here."
        ),
        buttons=((_open_button(booking),),),
    )


def fare_rose_refunded(booking: Booking, refunded: Money) -> Message:
    return Message(
        text=(
            f"😞 Sorry: the airline raised the fare for booking <b>{esc(booking.reference)}</b> "
            f"({route(booking)}, {day(booking.itinerary.departure)}) before the ticket could be "
            f"issued, so nothing was booked.\nYour payment of <b>{refunded.format()}</b> has "
            "been refunded in full; banks usually show it within 5–10 days.\n/start to search "
            "again."
        ),
        buttons=((_open_button(booking),),),
    )


def fare_rose_refund_pending(booking: Booking) -> Message:
    return Message(
        text=(
            f"😞 Sorry: the airline raised the fare for booking <b>{esc(booking.reference)}</b> "
            "before the ticket could be issued, so nothing was booked. Your payment of "
            f"<b>{booking.amount.format()}</b> will be refunded in full: our team has been "
            "alerted and will confirm it here."
        ),
        buttons=((_open_button(booking),),),
    )


def alert_other_amount(booking: Booking, paid: Money, session_id: str, refunded: bool) -> str:
    outcome = "refunded in full" if refunded else "NOT refunded yet (retrying): check Stripe"
    return (
        f"🚨 Booking {esc(booking.reference)} costs {booking.amount.format()} but its "
        f"Checkout Session {esc(session_id)} was paid {paid.format()}: not ticketed, "
        f"{outcome}."
    )


def alert_session_mismatch(booking: Booking, session_id: str, payment_intent: str | None) -> str:
    return (
        f"🚨 A Stripe event names booking {esc(booking.reference)} in its metadata, but its "
        f"Checkout Session {esc(session_id)} (payment {esc(payment_intent or 'none')}) was "
        "never that booking's. Refused: nothing changed. Check it in Stripe."
    )


def alert_fare_rose(booking: Booking, total: Money, *, refunded: bool | None) -> str:
    if refunded is None:  # the admin decides
        outcome = (
            "Nothing was bought; it stays 'paid'. Buy it at the provider and /ticketed "
            f"{esc(booking.reference)}, or /refund {esc(booking.reference)}."
        )
    elif refunded:
        outcome = "Nothing was bought; the traveller was refunded in full."
    else:
        outcome = "Nothing was bought; the refund FAILED: refund it by hand."
    return (
        f"⚠️ Booking {esc(booking.reference)}: the fare rose from {booking.amount.format()} to "
        f"{total.format()} at ticketing ({esc(booking.itinerary.provider)}). {outcome}"
    )


def alert_bought_above_payment(booking: Booking, total: Money) -> str:
    return (
        f"⚠️ Booking {esc(booking.reference)} was ticketed for {total.format()} by "
        f"{esc(booking.itinerary.provider)}, above the {booking.amount.format()} paid."
    )


def alert_ticketing_in_doubt(booking: Booking, provider_booking_id: str) -> str:
    return (
        f"⚠️ Booking {esc(booking.reference)} is paid ({booking.amount.format()}); an earlier "
        f"ticketing attempt stopped after placing {esc(booking.itinerary.provider)} booking "
        f"{esc(provider_booking_id)}, which may or may not be paid. Nothing was bought again. "
        f"Check it with the provider, then /ticketed {esc(booking.reference)} or /refund "
        f"{esc(booking.reference)}."
    )
