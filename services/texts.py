"""What the booking service tells travellers and admins.

Messages and admin alerts are Telegram HTML: everything a traveller typed goes through ``esc``;
passport numbers are only ever shown masked; prices through ``Money.format``. Refusals (the text
of the booking service's errors) are plain text for the caller to escape. Buttons use the global
actions the handlers route in any conversation state: ``!booking`` opens a booking, ``!renew``
sends a fresh payment link.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.flights.dates import format_day, format_duration
from services.flights.format import day_offset, stops_text
from services.mail.ics import MIME_TYPE, booking_calendar, calendar_filename
from services.messages import Button, Document, Message, esc
from services.models import Booking, Itinerary, Segment, Traveller
from services.money import Money


# formatting (the search flow's helpers, so dates and durations read the same everywhere) -----
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
        f"{format_day(first.departure)} · {duration(last.arrival - first.departure)}, "
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
        *airline_lines(booking),
    ]
    return Message(
        text="\n".join(lines) + _demo_note(booking),
        buttons=((_open_button(booking),),),
        document=calendar_document(booking),
    )


def calendar_document(booking: Booking) -> Document:
    """The booking's flights as an .ics file, sent in the chat after the confirmation."""
    return Document(
        filename=calendar_filename(booking), content=booking_calendar(booking), mime_type=MIME_TYPE
    )


def payment_received_ticket_pending(booking: Booking) -> Message:
    return Message(
        text=(
            f"💳 Payment of <b>{booking.amount.format()}</b> received for booking "
            f"<b>{esc(booking.reference)}</b> ({route(booking)}, "
            f"{format_day(booking.itinerary.departure)}).\n"
            "Issuing the ticket is taking a little longer than usual. You don't need to do "
            "anything: I'll message you here as soon as it is confirmed."
        ),
        buttons=((_open_button(booking),),),
    )


def link_expired(booking: Booking) -> Message:
    return Message(
        text=(
            f"⌛ The payment link for booking <b>{esc(booking.reference)}</b> "
            f"({route(booking)}, {format_day(booking.itinerary.departure)}) has expired and nothing "
            "was charged.\nTap below for a new link: I'll check the fare is still available "
            "at the same price first."
        ),
        buttons=((_renew_button(booking),),),
    )


def payment_cancelled(booking: Booking) -> Message:
    return Message(
        text=(
            f"Booking <b>{esc(booking.reference)}</b> is cancelled and nothing was charged: "
            f"you cancelled the payment ({route(booking)}, {format_day(booking.itinerary.departure)})."
            "\n/start to search again."
        ),
        buttons=((_open_button(booking),),),
    )


def ended_booking_refunded(booking: Booking, refunded: Money) -> Message:
    return Message(
        text=(
            f"A payment of <b>{refunded.format()}</b> arrived for booking "
            f"<b>{esc(booking.reference)}</b> after it was cancelled, so no ticket was issued. "
            "It has been refunded in full; banks usually show it within 5–10 days."
        ),
        buttons=((_open_button(booking),),),
    )


def ended_booking_refund_pending(booking: Booking) -> Message:
    return Message(
        text=(
            f"A payment arrived for booking <b>{esc(booking.reference)}</b> after it was "
            "cancelled, so no ticket was issued. It will be refunded in full: our team has "
            "been alerted and will confirm it here."
        ),
        buttons=((_open_button(booking),),),
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
            f"{format_day(booking.itinerary.departure)}).\n"
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


def owed_refund_sent(booking: Booking, refunded: Money) -> Message:
    """The refund promised when ticketing failed and Stripe could not take it at once."""
    return Message(
        text=(
            f"💸 Your refund of <b>{refunded.format()}</b> for booking "
            f"<b>{esc(booking.reference)}</b> has been sent; banks usually show it within "
            "5–10 days."
        ),
        buttons=((_open_button(booking),),),
    )


def cancelled_by_traveller(booking: Booking, refunded: Money) -> Message:
    """The answer to "Yes, cancel", under the question that named the trip: what comes back
    (``refunded``, zero for a fare the airline does not refund)."""
    done = f"Booking <b>{esc(booking.reference)}</b> is cancelled."
    if refunded.amount == 0:
        text = f"{done} Its fare was non-refundable, so nothing is refunded."
    else:
        text = (
            f"{done}\n<b>{refunded.format()}</b> is on its way back to your card; banks usually "
            "show it within 5–10 days."
        )
    return Message(text=text, buttons=((_open_button(booking),),))


def refund_issued(booking: Booking, refunded: Money, *, full: bool) -> Message:
    what = "Your booking has been cancelled and refunded" if full else "A partial refund"
    return Message(
        text=(
            f"💸 {what}: <b>{refunded.format()}</b> for booking "
            f"<b>{esc(booking.reference)}</b> ({route(booking)}, "
            f"{format_day(booking.itinerary.departure)}).\nBanks usually show it within 5–10 days."
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
        *airline_lines(booking),
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
        f"{format_day(booking.itinerary.departure)}."
    )


def cannot_renew(booking: Booking) -> str:
    return (
        f"Booking {booking.reference} is {booking.status.label.lower()}: there is no "
        "payment to make."
    )


def too_many_open_links(count: int) -> str:
    return (
        f"You already have {count} bookings waiting for payment. Pay for one of them, or "
        "cancel one in /mybookings, then tap Pay again."
    )


def too_many_links(booking: Booking, links: int) -> str:
    return (
        f"Booking {booking.reference} has had {links} payment links already, so I won't make "
        "another. /start to search again and book afresh."
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
    why = (
        "no payment is recorded on it"
        if booking.status.holds_payment
        else f"no payment was taken (status: {booking.status.label})"
    )
    return f"Nothing to refund on booking {booking.reference}: {why}."


def refund_too_large(booking: Booking, amount: Money) -> str:
    return (
        f"{amount.format()} is more than booking {booking.reference} was paid "
        f"({booking.amount.format()})."
    )


def refund_exceeds_what_is_left(booking: Booking, amount: Money) -> str:
    gone = booking.amount.amount - booking.refundable.amount
    return (
        f"{amount.format()} is more than is left to refund on booking {booking.reference}: "
        f"{booking.refundable.format()} of {booking.amount.format()} "
        f"({Money(amount=gone, currency=booking.amount.currency).format()} already refunded)."
    )


def already_refunded(booking: Booking) -> str:
    if booking.refund_pending_minor or booking.status.value == "cancelled":
        return (
            f"Nothing to refund on booking {booking.reference}: it is already being refunded "
            "right now."
        )
    amount = f" ({booking.refunded.format()})" if booking.refunded_minor else ""
    return (
        f"Nothing to refund on booking {booking.reference}: it has already been refunded{amount}."
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


def alert_refund_unconfirmed(booking: Booking, amount: Money, key: str) -> str:
    return (
        f"🚨 Refund of {amount.format()} for booking {esc(booking.reference)}: Stripe did not "
        "answer, nor say afterwards whether it made it. The amount stays held so that it is "
        f"not refunded twice. Look in Stripe's dashboard for a refund whose metadata "
        f"idempotency_key is {esc(key)}."
    )


def alert_refund_claim_released(booking: Booking, amount: Money) -> str:
    return (
        f"🚨 A refund of {amount.format()} for booking {esc(booking.reference)} was started "
        "but never made (its worker stopped, or Stripe failed it). The money is refundable "
        f"again: status {booking.status.value}; retry /refund {esc(booking.reference)} if it "
        "is owed."
    )


def alert_payment_on_ended_booking(booking: Booking, paid: Money) -> str:
    return (
        f"⚠️ A payment of {paid.format()} arrived for booking {esc(booking.reference)}, which "
        "was cancelled before it was paid, and could not be refunded automatically: check "
        "Stripe and refund it by hand."
    )


def alert_duplicate_payment(booking: Booking, payment_intent: str, refunded: bool) -> str:
    outcome = "refunded automatically" if refunded else "NOT refunded yet (retrying): check Stripe"
    return f"Second payment {esc(payment_intent)} for booking {esc(booking.reference)}: {outcome}."


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


# the airline's order (order before charge, cancelling with the airline, its notifications) ---
def airline_lines(booking: Booking) -> list[str]:
    """The airline's booking reference (PNR) and e-tickets, once the provider gave them."""
    lines: list[str] = []
    if booking.airline_reference:
        lines.append(f"Airline booking reference: <b>{esc(booking.airline_reference)}</b>")
    if booking.ticket_numbers:
        lines.append("E-tickets: " + ", ".join(esc(n) for n in booking.ticket_numbers))
    return lines


def fare_hold_note(booking: Booking) -> str:
    """What the airline holds while the traveller pays, said plainly on the payment message."""
    if booking.provider_order_id:
        return "\nThe airline is holding your seats at this price until then."
    if booking.itinerary.holdable is not False:
        return ""
    return (
        "\nThe airline cannot hold this fare: its price is confirmed only when the ticket is "
        "issued, right after you pay. If it changes first, you get your money back in full."
    )


def payment_link(booking: Booking, url: str, expires_at: datetime, *, sandbox: bool) -> Message:
    """The payment link for a booking, with its deadline: after Pay, and for "Pay now" or a new
    link from the booking's view (one renderer, so both read the same)."""
    amount = booking.amount.format()
    label = f"Pay {amount} (test payment)" if sandbox else f"💳 Pay {amount} securely"
    text = (
        f"Booking <b>{esc(booking.reference)}</b> is held for you. Pay by "
        f"<b>{deadline(expires_at)}</b> to keep this fare."
        + fare_hold_note(booking)
        + ("\n<i>This is a sandbox: no real money is taken.</i>" if sandbox else "")
    )
    return Message(
        text=text,
        buttons=(
            (Button(label=label, url=url),),
            (Button(label="Cancel this booking", action="!abandon", arg=booking.reference),),
        ),
    )


def fare_gone_at_pay(booking: Booking) -> str:
    return (
        "Sorry, this fare has just sold out or expired with the airline. Nothing was charged. "
        "/start to search again."
    )


def fare_changed_at_pay(booking: Booking, price: Money | None) -> str:
    now = f" it is now {price.format()}" if price is not None else " it has changed"
    return (
        f"The airline changed the price of this fare: it was {booking.amount.format()},"
        f"{now}. Nothing was charged. /start to search again."
    )


def hold_unavailable(booking: Booking) -> str:
    return "I couldn't reach the airline to hold this fare. Nothing was charged: tap Pay again in a minute."


def hold_refused(booking: Booking, reason: str) -> str:
    return (
        "The airline did not accept the booking, so nothing was charged. Check the travellers' "
        f"details (✏️ Edit) and tap Pay again. The airline said: {reason[:200]}"
    )


def fare_hold_too_short(booking: Booking, until: datetime) -> str:
    return (
        f"The airline keeps this fare only until {deadline(until)}, too soon to pay safely. "
        "Nothing was charged. /start to search again for a fresh fare."
    )


def cancel_question(booking: Booking, refund: Money) -> str:
    """The question before a traveller cancels, with what the airline gives back."""
    if refund.amount == 0:
        return (
            f"Booking <b>{esc(booking.reference)}</b> has a <b>non-refundable</b> fare: if you "
            "cancel, the airline refunds nothing and neither can we. Cancel anyway?"
        )
    if refund < booking.amount:
        kept = booking.amount - refund
        return (
            f"Cancel booking <b>{esc(booking.reference)}</b>? The airline keeps "
            f"{kept.format()} of the fare: <b>{refund.format()}</b> comes back to your card."
        )
    return (
        f"Cancel booking <b>{esc(booking.reference)}</b> and refund {refund.format()} to your card?"
    )


def airline_unreachable(booking: Booking) -> str:
    return (
        f"I couldn't reach the airline to cancel booking {booking.reference}. Nothing has "
        "changed: try again in a few minutes."
    )


def airline_refused_cancel(booking: Booking) -> str:
    return (
        f"The airline would not cancel booking {booking.reference} automatically. Nothing has "
        "changed; our team has been told and will help you here."
    )


def airline_refunds_nothing(booking: Booking) -> str:
    return (
        f"Booking {booking.reference} is cancelled with the airline, which refunds nothing for "
        "this fare. To give money back anyway, refund an amount: /refund REF 20.00 reason."
    )


def schedule_changed(booking: Booking, summary: str) -> Message:
    return Message(
        text=(
            f"🕑 <b>Schedule change</b> for booking <b>{esc(booking.reference)}</b> "
            f"({route(booking)}, {format_day(booking.itinerary.departure)}).\n{esc(summary)}\n"
            "If the new times don't work for you, reply here and we'll help."
        ),
        buttons=((_open_button(booking),),),
    )


def airline_cancelled(booking: Booking, refunded: Money | None) -> Message:
    money = (
        f"<b>{refunded.format()}</b> is on its way back to your card."
        if refunded is not None
        else "Your refund is being arranged; our team will confirm it here."
    )
    return Message(
        text=(
            f"❌ The airline cancelled the flight of booking <b>{esc(booking.reference)}</b> "
            f"({route(booking)}, {format_day(booking.itinerary.departure)}). {money}\n"
            "/start to search for another flight."
        ),
        buttons=((_open_button(booking),),),
    )


def alert_schedule_changed(booking: Booking) -> str:
    return (
        f"🕑 The airline changed the schedule of booking {esc(booking.reference)} "
        f"(order {esc(booking.provider_order_id or '—')}); the traveller was told. /booking "
        f"{esc(booking.reference)} shows it."
    )


def alert_airline_cancelled(booking: Booking, *, refunded: bool) -> str:
    what = "the traveller was refunded in full" if refunded else "it still needs a refund"
    return (
        f"❌ The airline cancelled booking {esc(booking.reference)} "
        f"(order {esc(booking.provider_order_id or '—')}): {what}. Claim the fare back from "
        "the provider."
    )


def alert_airline_cancel_failed(booking: Booking, error: str) -> str:
    return (
        f"⚠️ Booking {esc(booking.reference)}: the airline refused an automatic cancellation "
        f"({esc(error[:200])}). Cancel it with the provider by hand, then refund it."
    )


def alert_provider_ticketed(booking: Booking) -> str:
    return (
        f"✅ The provider reports booking {esc(booking.reference)} ticketed "
        f"(order {esc(booking.provider_order_id or '—')}) while it waits for a ticket here: "
        f"check it, then /ticketed {esc(booking.reference)}."
    )


def alert_order_cancelled_at_provider(booking: Booking) -> str:
    return (
        f"⚠️ The provider reports the order of confirmed booking {esc(booking.reference)} "
        f"(order {esc(booking.provider_order_id or '—')}) cancelled, not by us. Check it with "
        f"the provider; /refund {esc(booking.reference)} if the traveller is owed the fare."
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
            f"({route(booking)}, {format_day(booking.itinerary.departure)}) before the ticket could be "
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
