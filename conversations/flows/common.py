"""Commands that work from any state, and the global buttons of bookings and notifications."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from conversations.data import Conversation
from conversations.deps import FlowDeps
from conversations.engine import KEEP, Event, Pressed, State, Step
from conversations.flow import SHOW_HELP, Command, Flow
from conversations.flows import search as search_flow
from services import texts
from services.alert_models import PriceAlert
from services.alerts import describe as describe_alert
from services.bookings import BookingError, cancellation_refusal
from services.flights.dates import format_date, format_day
from services.messages import Button, Document, Message, Notice, esc
from services.models import Booking, BookingStatus, Profile
from services.payments.base import PaymentError

log = logging.getLogger(__name__)

HELP_INTRO = "I find and book flights."  # /help: then a line per command (conversations.flow)


def _keep(conv: Conversation | None, *replies: Message, notice: Notice | None = None) -> Step:
    return Step(state=KEEP, data=conv, replies=list(replies), notice=notice)


async def cmd_start(deps: FlowDeps, conv: Conversation | None, event: Event) -> Step:
    await deps.storage.upsert_profile(
        event.user.id,
        username=event.user.username,
        first_name=event.user.first_name or None,
        language=event.user.language,
    )
    payload = event.text.strip()
    if payload:
        kind, _, reference = payload.partition("_")
        if kind == "cancelled" and reference:
            # Back from the payment page's cancel link: the traveller gave up on paying.
            cancelled = await _cancel_unpaid(deps, event.user.id, reference)
            if cancelled is not None:
                return _keep(conv, cancelled)
        if kind in ("paid", "booking", "cancelled") and reference:
            booking = await deps.storage.get_booking_by_reference(reference, user_id=event.user.id)
            if booking is not None:
                return _keep(conv, booking_view(booking, deps.clock()))
    name = esc(event.user.first_name) if event.user.first_name else "there"
    greeting = f"Hi {name}! I can find and book flights."
    if deps.demo_fares:
        greeting += " <i>(Demo fares: for trying me out, no real tickets.)</i>"
    profile = await deps.storage.get_profile(event.user.id)
    saved = profile.saved_travellers if profile else ()
    if saved:
        names = ", ".join(esc(t.full_name) for t in saved[:3])
        greeting += f"\nSaved travellers: {names}. I'll offer them when you book."
    again = await search_flow.again_button(deps, event.user.id)
    step = search_flow.new_search(conv, greeting)
    rows = ((again,),) if again is not None else ()
    step.replies[0] = step.replies[0].model_copy(
        update={"buttons": (*rows, (Button(label="My bookings", action="!mybookings"),))}
    )
    return step


async def _cancel_unpaid(deps: FlowDeps, user_id: int, reference: str) -> Message | None:
    try:
        done = await deps.bookings.abandon(user_id, reference)
    except BookingError:
        return None
    if not done:
        return None
    return Message(
        text=f"Booking <b>{esc(reference.upper())}</b> is cancelled; nothing was charged. "
        "/start to search again."
    )


async def cmd_cancel(deps: FlowDeps, conv: Conversation | None, event: Event) -> Step:
    return Step(
        state=None,
        data=None,
        replies=[
            Message(
                text="Cancelled. Your bookings are kept: /mybookings shows them. "
                "/start to search again."
            )
        ],
    )


async def _bookings_list(deps: FlowDeps, user_id: int) -> Message:
    bookings = await deps.storage.list_bookings(user_id, limit=10)
    if not bookings:
        return Message(text="You have no bookings yet. /start to search for flights.")
    lines = [
        f"<b>{esc(b.reference)}</b> · {texts.route(b)} · {format_day(b.departure_date)} · "
        f"{b.amount.format()} · {b.status.label}"
        for b in bookings
    ]
    buttons = tuple(
        (
            Button(
                label=f"{b.reference} · {b.origin}→{b.destination}",
                action="!booking",
                arg=b.reference,
            ),
        )
        for b in bookings
    )
    return Message(text="<b>Your bookings</b>\n\n" + "\n".join(lines), buttons=buttons)


def booking_view(booking: Booking, now: datetime) -> Message:
    """A booking's detail, with what the traveller can do with it now (cancel: while the
    booking service would, so a button never leads to a refusal)."""
    buttons: list[tuple[Button, ...]] = []
    reference = booking.reference
    if booking.status is BookingStatus.AWAITING_PAYMENT:
        buttons.append((Button(label="Pay now", action="!renew", arg=reference),))
        buttons.append((Button(label="Abandon this booking", action="!abandon", arg=reference),))
    elif booking.status is BookingStatus.EXPIRED:
        buttons.append((Button(label="Get a new payment link", action="!renew", arg=reference),))
    elif cancellation_refusal(booking, now) is None:
        buttons.append((Button(label="Cancel and refund", action="!cancelask", arg=reference),))
    buttons.append((Button(label="‹ My bookings", action="!mybookings"),))
    return Message(text=texts.booking_detail(booking), buttons=tuple(buttons))


async def cmd_mybookings(deps: FlowDeps, conv: Conversation | None, event: Event) -> Step:
    return _keep(conv, await _bookings_list(deps, event.user.id))


MYDATA_FILE = "my-travelbot-data.json"
MYDATA_LIST = 10  # bookings and saved travellers listed in the chat; the file has them all


def _stored_data(
    profile: Profile | None, bookings: list[Booking], alerts: Sequence[PriceAlert] = ()
) -> dict[str, Any]:
    """Everything stored about the user, passport numbers masked: the /mydata file."""
    return {
        "profile": profile.model_dump(mode="json", exclude={"saved_travellers"})
        if profile
        else None,
        "saved_travellers": [
            t.model_dump(mode="json", exclude={"passport_number"})
            for t in (profile.saved_travellers if profile else ())
        ],
        "bookings": [
            {
                "reference": b.reference,
                "status": b.status.value,
                "route": f"{b.origin}-{b.destination}",
                "departure": b.departure_date.isoformat(),
                "amount": b.amount.format(),
                "travellers": [
                    t.model_dump(mode="json", exclude={"passport_number"}) for t in b.travellers
                ],
            }
            for b in bookings
        ],
        "price_alerts": [
            {
                "route": f"{a.origin}-{a.destination}",
                "departure": a.departure.isoformat(),
                "target": a.target.format() if a.target else "when it drops",
                "status": a.status.value,
            }
            for a in alerts
        ],
    }


def _mydata_summary(
    profile: Profile | None, bookings: list[Booking], alerts: Sequence[PriceAlert] = ()
) -> str:
    lines = ["<b>What I store about you</b>"]
    if profile is None:
        lines.append("No profile yet.")
    else:
        known = [
            f"name {esc(profile.first_name)}" if profile.first_name else "",
            f"username @{esc(profile.username)}" if profile.username else "",
            f"language {esc(profile.language)}" if profile.language else "",
            f"since {format_day(profile.created_at.date())}" if profile.created_at else "",
        ]
        lines.append("Profile: " + (", ".join(k for k in known if k) or "your Telegram id"))
        lines.append(f"Trip reminders: {'on' if profile.reminders else 'off'} (/reminders)")
    saved = profile.saved_travellers if profile else ()
    lines.append(f"\n<b>Saved travellers</b> ({len(saved)})")
    lines += [
        f"• {esc(t.full_name)}, {t.category.value}, born {format_date(t.birth_date)}, "
        f"passport {esc(t.passport_masked)}"
        for t in saved[:MYDATA_LIST]
    ] or ["none"]
    lines.append(f"\n<b>Bookings</b> ({len(bookings)})")
    lines += [
        f"• {esc(b.reference)} · {texts.route(b)} · {format_day(b.departure_date)} · "
        f"{b.amount.format()} · {b.status.label}"
        for b in bookings[:MYDATA_LIST]
    ] or ["none"]
    if len(bookings) > MYDATA_LIST:
        lines.append(f"…and {len(bookings) - MYDATA_LIST} more in the file.")
    if alerts:
        lines.append(f"\n<b>Price alerts</b> ({len(alerts)}, /alerts to change them)")
        lines += [f"• {describe_alert(a)}" for a in alerts[:MYDATA_LIST]]
    lines.append(
        "\nEverything, passport numbers masked, is in the file below. /deletedata erases it."
    )
    return "\n".join(lines)


async def cmd_mydata(deps: FlowDeps, conv: Conversation | None, event: Event) -> Step:
    profile = await deps.storage.get_profile(event.user.id)
    bookings = await deps.storage.list_bookings(event.user.id, limit=100)
    alerts = await deps.alerts.alerts_of(event.user.id) if deps.alerts else []
    body = json.dumps(_stored_data(profile, bookings, alerts), ensure_ascii=False, indent=2)
    return _keep(
        conv,
        Message(
            text=_mydata_summary(profile, bookings, alerts),
            document=Document(
                filename=MYDATA_FILE,
                content=body.encode(),
                mime_type="application/json",
                caption="Your data as JSON",
            ),
        ),
    )


def _trip_line(booking: Booking) -> str:
    return (
        f"<b>{esc(booking.reference)}</b> · {texts.route(booking)} · "
        f"{format_day(booking.itinerary.departure)}"
    )


async def cmd_deletedata(deps: FlowDeps, conv: Conversation | None, event: Event) -> Step:
    plan = await deps.bookings.erasure_plan(event.user.id)
    lines = [
        "This erases your profile, saved travellers and price alerts, and removes names, "
        "passport details and contacts from your bookings. Bookings themselves stay for our "
        "accounts. Trip reminders stop with the profile (/reminders on starts them again)."
    ]
    if plan.cancelled:
        lines += [
            "",
            "These unpaid bookings will be cancelled and their payment links closed:",
            *(f"  {_trip_line(b)}" for b in plan.cancelled),
        ]
    if plan.kept:
        lines += [
            "",
            "These upcoming trips stay booked:",
            *(f"  {_trip_line(b)}" for b in plan.kept),
            "The airline needs their travellers' names and passport details until the trip "
            "is over, so I keep those until then and erase them afterwards. To cancel a trip "
            "first, use /mybookings.",
        ]
    lines += ["", "Continue?"]
    return _keep(
        conv,
        Message(
            text="\n".join(lines),
            buttons=(
                (Button(label="Yes, erase my data", action="!deleteyes"),),
                (Button(label="No, keep it", action="!deleteno"),),
            ),
        ),
    )


# --- global buttons ---------------------------------------------------------------------------


async def btn_delete_yes(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    erasure = await deps.bookings.erase_user_data(event.user.id)
    lines = [f"Done: your data is erased and {erasure.anonymised} booking(s) anonymised."]
    if erasure.cancelled:
        count = len(erasure.cancelled)
        lines.append(f"{count} unpaid booking{'s' if count != 1 else ''} cancelled.")
    if erasure.kept:
        lines.append("Kept until the trip is over, then erased:")
        lines += [f"  {_trip_line(b)}" for b in erasure.kept]
    # The conversation goes too: a booking in progress holds names, documents and contacts.
    return Step(
        state=None, data=None, replies=[Message(text="\n".join(lines), edit=True)], forget=True
    )


async def btn_delete_no(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    return _keep(conv, Message(text="Nothing was erased.", edit=True))


async def btn_mybookings(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    return _keep(conv, await _bookings_list(deps, event.user.id))


async def btn_booking(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    booking = await deps.storage.get_booking_by_reference(pressed.arg, user_id=event.user.id)
    if booking is None:
        return _keep(conv, notice=Notice(text="Booking not found."))
    return _keep(conv, booking_view(booking, deps.clock()))


async def btn_renew(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    try:
        booking, session = await deps.bookings.renew_checkout(event.user.id, pressed.arg)
    except BookingError as error:
        return _keep(conv, Message(text=esc(str(error))))
    except PaymentError:
        return _keep(
            conv, Message(text="I couldn't create a payment link just now. Try again in a minute.")
        )
    return _keep(
        conv,
        texts.payment_link(booking, session.url, session.expires_at, sandbox=deps.sandbox_payments),
    )


async def btn_abandon(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    try:
        done = await deps.bookings.abandon(event.user.id, pressed.arg)
    except BookingError as error:
        return _keep(conv, Message(text=esc(str(error))))
    text = (
        f"Booking {esc(pressed.arg)} is cancelled; nothing was charged. /start to search again."
        if done
        else f"Booking {esc(pressed.arg)} can no longer be abandoned: /mybookings shows its status."
    )
    return _keep(conv, Message(text=text))


async def btn_cancel_ask(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    booking = await deps.storage.get_booking_by_reference(pressed.arg, user_id=event.user.id)
    if booking is None:
        return _keep(conv, notice=Notice(text="Booking not found.", alert=True))
    refusal = cancellation_refusal(booking, deps.clock())
    if refusal is not None:  # an old button: the booking changed, or its flight left
        return _keep(conv, notice=Notice(text=str(refusal), alert=True))
    try:  # the airline says what it gives back before the traveller confirms
        refund = await deps.bookings.cancellation_preview(event.user.id, booking.reference)
    except BookingError as error:
        return _keep(conv, Message(text=esc(str(error))))
    return _keep(
        conv,
        Message(
            text=texts.cancel_question(booking, refund),
            buttons=(
                (
                    Button(
                        label="Yes, cancel and refund" if refund.amount else "Yes, cancel anyway",
                        action="!cancelyes",
                        arg=booking.reference,
                    ),
                ),
                (Button(label="No, keep it", action="!booking", arg=booking.reference),),
            ),
            edit=True,
        ),
    )


async def btn_cancel_yes(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    try:
        done = await deps.bookings.cancel_by_user(event.user.id, pressed.arg)
    except BookingError as error:
        return _keep(conv, Message(text=esc(str(error))))
    except PaymentError:
        log.warning("refund failed for a user cancellation", exc_info=True)
        return _keep(
            conv,
            Message(text="The refund could not be started just now; please try again shortly."),
        )
    return _keep(conv, texts.cancelled_by_traveller(done.booking, done.refunded))


async def idle_text(deps: FlowDeps, conv: Conversation | None, event: Event) -> Step:
    """Out of any flow (after /cancel, or a conversation that expired), a place or a whole
    search typed starts the search with it; anything else gets the way in."""
    step = await search_flow.search_from_idle(deps, event)
    if step is not None:
        return step
    return _keep(
        conv, Message(text="Type /start to search for flights, or /help to see what I can do.")
    )


IDLE: State[FlowDeps, Conversation] = State(
    "", hint="Type /start to search for flights, or /help to see what I can do.", on_text=idle_text
)

FLOW: Flow[FlowDeps, Conversation] = Flow(
    name="common",
    prefix="common:",
    idle=IDLE,
    # Positions in the menus and /help: a feature's command goes between the two it belongs
    # between (Command.position).
    commands=(
        Command(
            "start", cmd_start, menu="Search for flights", help="search for flights", position=10
        ),
        Command(
            "mybookings",
            cmd_mybookings,
            menu="Your bookings",
            help="your bookings, payments and cancellations",
            position=20,
        ),
        Command(
            "cancel",
            cmd_cancel,
            menu="Stop the current step",
            help="stop what we're doing (your bookings are kept)",
            position=40,
        ),
        Command(
            "mydata",
            cmd_mydata,
            menu="What I store about you",
            help="what I store about you",
            position=50,
        ),
        Command(
            "deletedata",
            cmd_deletedata,
            menu="Erase your data",
            help="erase your data",
            position=70,
        ),
        Command("help", SHOW_HELP, menu="What I can do", help="this message", position=90),
    ),
    global_buttons={
        "!mybookings": btn_mybookings,
        "!booking": btn_booking,
        "!renew": btn_renew,
        "!abandon": btn_abandon,
        "!cancelask": btn_cancel_ask,
        "!cancelyes": btn_cancel_yes,
        "!deleteyes": btn_delete_yes,
        "!deleteno": btn_delete_no,
    },
)
