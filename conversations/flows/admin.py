"""Admin flow: run the business from the chat.

Admins are the ids in ``FlowDeps.admin_ids``. To anyone else an admin command does not exist:
they get exactly the engine's answer to an unknown command, and the attempt is logged and
written to ``admin_audit`` with action ``denied`` (the would-be admin's id in ``admin_id``,
the command in ``target``, never its arguments).

Audit actions: ``stats``, ``view_booking``, ``view_user``, ``refund`` (written by the booking
service when money moves), ``refund_refused``, ``refund_declined``, ``ticketed``,
``ticketed_refused``, ``block``, ``unblock``,
``broadcast``, ``broadcast_cancel``, ``denied``. A usage line for malformed arguments is not an
action and leaves no row.

Steps that need a confirmation are states with stable names (``admin:refund_confirm``...). The
admin's conversation data is kept meanwhile, and when the step ends the admin is put back in the
state they left (``AdminDraft.return_to``).

Blocked users: ``access_gate`` runs first in every engine turn. The block is mirrored into the
user's own conversation record (state ``admin:blocked``), which the engine reads under the lock
anyway, so in a conversation the check costs nothing; only a turn with no conversation record
(a new or expired conversation) reads the profile, by primary key. A blocked user gets one
polite notice, then silence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec

from pydantic import BaseModel, ConfigDict

from conversations.data import AdminDraft, Conversation, PendingRefund
from conversations.deps import FlowDeps
from conversations.engine import (
    KEEP,
    UNKNOWN_COMMAND,
    Event,
    Pressed,
    State,
    Step,
    fresh_version,
)
from conversations.flow import Command, Flow
from conversations.state import ChatKey, LockTimeoutError, StateRecord, StateStore, Turn
from services import admin as views
from services.admin import AdminInputError, AdminService, usage
from services.bookings import REFUND_RECORD_TYPE, BookingError, refund_refusal
from services.broadcast import MAX_TEXT, escape_text
from services.messages import Button, Message, Notice, esc
from services.models import BookingStatus, Profile
from services.money import Money
from services.storage import StorageUnavailableError

log = logging.getLogger(__name__)
P = ParamSpec("P")

MENU = "admin:menu"
ASK = "admin:ask"
REFUND_CONFIRM = "admin:refund_confirm"
BROADCAST_TEXT = "admin:broadcast_text"
BROADCAST_CONFIRM = "admin:broadcast_confirm"
BLOCKED = "admin:blocked"  # a blocked user's own conversation, written by /block

BLOCKED_NOTICE = (
    "Sorry, this bot is no longer available to your account. Bookings you have already paid "
    "for are not affected."
)
WELCOME_BACK = "You can use the bot again. /start to search for flights."

Handler = Callable[[FlowDeps, Conversation | None, Event], Awaitable[Step]]
Impl = Callable[[FlowDeps, Conversation, Event, str], Awaitable[Step]]


# --- helpers -----------------------------------------------------------------------------------


def _is_admin(deps: FlowDeps, event: Event) -> bool:
    return event.user.id in deps.admin_ids


def _service(deps: FlowDeps) -> AdminService:
    return AdminService(deps.storage)


def _reply(state: str | None, conv: Conversation | None, *replies: Message) -> Step:
    return Step(state=state, data=conv, replies=list(replies))


def _keep(conv: Conversation | None, *replies: Message) -> Step:
    """Answer and leave the user where they are (their state and data unchanged)."""
    return Step(state=KEEP, data=conv, replies=list(replies))


def _origin(conv: Conversation) -> str | None:
    """The non-admin state to return to when an admin step ends."""
    current = conv.loaded_state
    if current is not None and current.startswith("admin:"):
        return conv.admin.return_to if conv.admin else None
    return current


def _entered(conv: Conversation, **draft: Any) -> Conversation:
    """The conversation with a fresh admin step that remembers where the admin came from."""
    admin = AdminDraft(return_to=_origin(conv), **draft)
    return conv.model_copy(update={"admin": admin})


def _enter(conv: Conversation, state: str, *replies: Message, **draft: Any) -> Step:
    return _reply(state, _entered(conv, **draft), *replies)


def _leave(conv: Conversation, *replies: Message) -> Step:
    """End the admin step: back to the state the admin left, their data intact."""
    origin = conv.admin.return_to if conv.admin else None
    if origin is None:
        return _reply(None, None, *replies)
    return _reply(origin, conv.model_copy(update={"admin": None}), *replies)


def _update(conv: Conversation, **fields: Any) -> Conversation:
    admin = conv.admin or AdminDraft()
    return conv.model_copy(update={"admin": admin.model_copy(update=fields)})


async def _deny(deps: FlowDeps, conv: Conversation | None, event: Event, command: str) -> Step:
    """Exactly the engine's unknown-command answer; the attempt is logged and audited."""
    log.warning("user %s tried the admin command /%s", event.user.id, command)
    try:
        await _service(deps).audit(event.user.id, "denied", f"/{command}")
    except StorageUnavailableError:
        # Still the unknown-command answer: an error here would tell them the command exists.
        log.warning("could not audit a denied admin command", exc_info=True)
    return _keep(conv, Message(text=UNKNOWN_COMMAND))


def admin_command(command: str) -> Callable[[Impl], Handler]:
    """Turn ``impl(deps, conv, event, args)`` into an engine command open to admins only."""

    def wrap(impl: Impl) -> Handler:
        async def handler(deps: FlowDeps, conv: Conversation | None, event: Event) -> Step:
            if not _is_admin(deps, event):
                return await _deny(deps, conv, event, command)
            conversation = conv if conv is not None else Conversation()
            try:
                return await impl(deps, conversation, event, event.text.strip())
            except AdminInputError as error:
                return _keep(conversation, Message(text=str(error)))

        handler.__name__ = f"cmd_{command}"
        return handler

    return wrap


def _admin_state(
    handler: Callable[Concatenate[FlowDeps, Conversation, Event, P], Awaitable[Step]],
) -> Callable[Concatenate[FlowDeps, Conversation | None, Event, P], Awaitable[Step]]:
    """Guard a state handler: someone no longer an admin is put back at the start."""

    async def guarded(
        deps: FlowDeps,
        conv: Conversation | None,
        event: Event,
        /,
        *rest: P.args,
        **more: P.kwargs,
    ) -> Step:
        if not _is_admin(deps, event):
            return _reply(None, None, Message(text=UNKNOWN_COMMAND))
        conversation = conv if conv is not None else Conversation()
        return await handler(deps, conversation, event, *rest, **more)

    return guarded


# --- /admin menu -----------------------------------------------------------------------------

ASK_FOR = {
    "booking": "Send the booking reference, e.g. <i>K7MP3Q</i>.",
    "user": "Send the user's Telegram id or @username.",
    "refund": "Send the reference, then optionally an amount and a reason, e.g. "
    "<i>K7MP3Q</i> or <i>K7MP3Q 25.50 delayed flight</i>.",
    "block": "Send the Telegram id or @username of the user to block.",
    "unblock": "Send the Telegram id or @username of the user to unblock.",
}


def _menu_message(*, edit: bool = False) -> Message:
    lines = ["🛠 <b>Admin</b>. Pick an action, or type a command:"]
    lines += [f"{esc(line)}" for key, line in views.USAGE.items() if key != "admin"]
    return Message(
        text="\n".join(lines),
        buttons=(
            (
                Button(label="📊 Today", action="stats", arg="today"),
                Button(label="7 days", action="stats", arg="7d"),
                Button(label="30 days", action="stats", arg="30d"),
            ),
            (
                Button(label="🧾 Booking", action="ask", arg="booking"),
                Button(label="👤 User", action="ask", arg="user"),
                Button(label="💸 Refund", action="ask", arg="refund"),
            ),
            (
                Button(label="⛔ Block", action="ask", arg="block"),
                Button(label="✅ Unblock", action="ask", arg="unblock"),
            ),
            (
                Button(label="📣 Broadcast", action="broadcast"),
                Button(label="✋ Stop broadcast", action="stopcast"),
            ),
            (Button(label="Close", action="close"),),
        ),
        edit=edit,
    )


MENU_ROW = (Button(label="‹ Admin menu", action="menu"), Button(label="Close", action="close"))


@admin_command("admin")
async def cmd_admin(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    if args:
        raise AdminInputError(usage("admin"))
    return _enter(conv, MENU, _menu_message())


@_admin_state
async def on_menu(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    return _reply(MENU, _update(conv, asking=None), _menu_message(edit=True))


@_admin_state
async def on_close(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    return _leave(conv, Message(text="Admin menu closed.", edit=True))


@_admin_state
async def on_menu_stats(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    try:
        step = await do_stats(deps, conv, event, pressed.arg)
    except AdminInputError as error:
        return _reply(MENU, conv, Message(text=str(error)))
    return _reply(MENU, conv, *step.replies)


@_admin_state
async def on_menu_ask(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    question = ASK_FOR.get(pressed.arg)
    if question is None:
        return _reply(MENU, conv)
    return _reply(
        ASK,
        _update(conv, asking=pressed.arg),
        Message(text=question, buttons=((MENU_ROW[0],),), edit=True),
    )


@_admin_state
async def on_ask_text(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    asking = conv.admin.asking if conv.admin else None
    impl = ASK_IMPLS.get(asking or "")
    if impl is None:
        return _reply(MENU, _update(conv, asking=None), _menu_message())
    try:
        step = await impl(deps, conv, event, event.text.strip())
    except AdminInputError as error:
        return _reply(ASK, conv, Message(text=str(error), buttons=((MENU_ROW[0],),)))
    if step.state in (REFUND_CONFIRM,):
        return step
    replies = list(step.replies)
    if replies:
        last = replies[-1]
        replies[-1] = last.model_copy(update={"buttons": (*last.buttons, MENU_ROW)})
    return _reply(MENU, _update(conv, asking=None), *replies)


@_admin_state
async def on_menu_broadcast(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    return await do_broadcast(deps, conv, event, "")


@_admin_state
async def on_menu_stopcast(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    step = await do_broadcast_cancel(deps, conv, event, "")
    replies = [r.model_copy(update={"buttons": (MENU_ROW,)}) for r in step.replies]
    return _reply(MENU, conv, *replies)


# --- views: /stats, /booking, /user ----------------------------------------------------------


async def do_stats(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    period = views.parse_period(args)
    service = _service(deps)
    text = await service.stats(period)
    await service.audit(event.user.id, "stats", period.value)
    return _keep(conv, Message(text=text))


async def do_booking(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    reference = views.parse_reference(args, "booking")
    service = _service(deps)
    booking = await service.booking(reference)
    await service.audit(event.user.id, "view_booking", reference, found=booking is not None)
    if booking is None:
        return _keep(conv, Message(text=f"No booking with reference {esc(reference)}."))
    return _keep(conv, Message(text=await service.booking_view(booking)))


async def _find_user(deps: FlowDeps, args: str, command: str) -> tuple[int | str, Profile | None]:
    target = views.parse_user_target(args, command)
    return target, await _service(deps).find_user(target)


def _no_user(target: int | str) -> Message:
    who = f"@{esc(target)}" if isinstance(target, str) else str(target)
    return Message(text=f"No user {who}: they have never talked to the bot, or erased their data.")


async def do_user(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    target, profile = await _find_user(deps, args, "user")
    service = _service(deps)
    await service.audit(
        event.user.id,
        "view_user",
        str(profile.user_id if profile else target),
        found=profile is not None,
    )
    if profile is None:
        return _keep(conv, _no_user(target))
    return _keep(conv, Message(text=await service.user_view(profile)))


# --- /refund ---------------------------------------------------------------------------------


async def do_refund(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    request = views.parse_refund(args)
    service = _service(deps)
    booking = await service.booking(request.reference)
    if booking is None:
        return _keep(conv, Message(text=f"No booking with reference {esc(request.reference)}."))
    refused = refund_refusal(booking)
    refusal = None if refused is None else esc(str(refused))
    amount: Money | None = None
    if refusal is None and request.amount is not None:
        try:
            amount = views.refund_money(request.amount, booking.amount.currency)
        except AdminInputError as error:
            refusal = str(error)
        else:
            refused = refund_refusal(booking, amount)
            refusal = None if refused is None else esc(str(refused))
    if refusal is not None:
        await service.audit(event.user.id, "refund_refused", booking.reference, reason=refusal)
        return _keep(conv, Message(text=refusal))
    full = amount is None or amount == booking.refundable
    shown = (amount or booking.amount).format()
    events = await deps.storage.list_payment_events(booking.id)
    earlier = sum(1 for _, kind, _ in events if kind == REFUND_RECORD_TYPE)
    if full and earlier:
        shown = "the rest"
        what = (
            f"whatever is left of {booking.amount.format()} after {earlier} earlier "
            f"refund(s), {booking.refundable.format()}: the booking ends <b>refunded</b>"
        )
    elif full:
        what = f"the full {shown}: the booking ends <b>refunded</b>"
    else:
        what = (
            f"{shown} of {booking.amount.format()} (partial: the booking stays "
            f"{booking.status.label.lower()})"
        )
    reason = f"\nReason: {esc(request.reason)}" if request.reason else ""
    pending = PendingRefund(
        reference=booking.reference,
        amount=None if full or amount is None else amount.amount,
        currency=booking.amount.currency,
        reason=request.reason,
    )
    return _enter(
        conv,
        REFUND_CONFIRM,
        Message(
            text=(
                f"💸 Refund booking <b>{esc(booking.reference)}</b> "
                f"({views.booking_line(booking)}), user <code>{booking.user_id}</code>?\n"
                f"Amount: {what}.{reason}\nThe traveller is told."
            ),
            buttons=(
                (Button(label=f"Refund {shown}", action="yes"),),
                (Button(label="Don't refund", action="no"),),
            ),
        ),
        refund=pending,
    )


@_admin_state
async def on_refund_yes(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    pending = conv.admin.refund if conv.admin else None
    if pending is None:
        return _leave(conv, Message(text="That refund is no longer pending.", edit=True))
    amount = (
        Money(amount=pending.amount, currency=pending.currency)
        if pending.amount is not None
        else None
    )
    try:
        booking = await deps.bookings.refund_by_admin(
            pending.reference,
            amount=amount,
            reason=pending.reason or None,
            admin_id=event.user.id,
        )
    except BookingError as error:
        await _service(deps).audit(
            event.user.id, "refund_refused", pending.reference, reason=str(error)
        )
        return _leave(conv, Message(text=f"❌ {error}"))
    done = (
        f"Refunded {amount.format()} on booking <b>{esc(booking.reference)}</b>"
        if amount is not None
        else f"Booking <b>{esc(booking.reference)}</b> refunded in full"
        if booking.status is BookingStatus.REFUNDED
        # cancelled with the airline, which kept part of the fare: that part is not refunded
        else f"Booking <b>{esc(booking.reference)}</b> cancelled with the airline and refunded "
        "what the airline refunds"
    )
    return _leave(
        conv,
        Message(
            text=f"✅ {done}. Status: {booking.status.label}. The traveller has been told.",
            edit=True,
        ),
    )


@_admin_state
async def on_refund_no(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    pending = conv.admin.refund if conv.admin else None
    if pending is not None:
        await _service(deps).audit(event.user.id, "refund_declined", pending.reference)
    return _leave(conv, Message(text="Not refunded.", edit=True))


# --- /ticketed --------------------------------------------------------------------------------


async def do_ticketed(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    """Closes a manual-ticketing alert: paid → confirmed, and the traveller is sent the
    confirmation."""
    reference = views.parse_reference(args, "ticketed")
    service = _service(deps)
    try:
        booking = await deps.bookings.mark_ticketed(reference)
    except BookingError as error:
        await service.audit(event.user.id, "ticketed_refused", reference, reason=str(error))
        return _keep(conv, Message(text=f"❌ {esc(str(error))}"))
    await service.audit(event.user.id, "ticketed", booking.reference)
    return _keep(
        conv,
        Message(
            text=(
                f"✅ Booking <b>{esc(booking.reference)}</b> ({views.booking_line(booking)}) is "
                "confirmed. The traveller has been sent the confirmation."
            )
        ),
    )


# --- /block, /unblock ------------------------------------------------------------------------


async def do_block(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    return await _set_blocked(deps, conv, event, args, blocked=True)


async def do_unblock(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    return await _set_blocked(deps, conv, event, args, blocked=False)


async def _set_blocked(
    deps: FlowDeps, conv: Conversation, event: Event, args: str, *, blocked: bool
) -> Step:
    command = "block" if blocked else "unblock"
    target, profile = await _find_user(deps, args, command)
    if profile is None:
        return _keep(conv, _no_user(target))
    if profile.user_id in deps.admin_ids:
        return _keep(
            conv, Message(text="Admins can't be blocked: remove them from ADMIN_USER_IDS.")
        )
    service = _service(deps)
    outcome = await service.set_blocked(profile, blocked)
    who = views.who(profile.user_id, profile)
    reached = True
    if deps.chats is not None and outcome.changed:
        # The user's conversation learns of it at once (see access_gate).
        if blocked:
            reached = await deps.chats.put(profile.user_id, BLOCKED, {"noticed": False})
        else:
            reached = await deps.chats.clear(profile.user_id, only_in=BLOCKED)
    await service.audit(
        event.user.id,
        command,
        str(profile.user_id),
        changed=outcome.changed,
        open_payment_links=[b.reference for b in outcome.open_links],
    )
    if blocked:
        head = f"⛔ {who} is blocked." if outcome.changed else f"{who} was already blocked."
        lines = [head, "They get one notice and no answers from now on.", ""]
        lines.append(views.open_links_text(outcome.open_links))
        if not reached:
            lines.append(
                "\n(Their open conversation was busy: the block applies from their next "
                "message after it.)"
            )
    else:
        head = f"✅ {who} is unblocked." if outcome.changed else f"{who} was not blocked."
        lines = [head]
    return _keep(conv, Message(text="\n".join(lines)))


# --- /broadcast ------------------------------------------------------------------------------


async def do_broadcast(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    worker = deps.broadcasts
    if worker is None:
        return _keep(conv, Message(text="Broadcasts are not available in this process."))
    running = await worker.running()
    if running:
        current = running[0]
        return _keep(
            conv,
            Message(
                text=f"Broadcast #{current.id} is still running. /broadcast_cancel stops it; "
                "start a new one when it is done."
            ),
        )
    if args:
        return await _preview(deps, _entered(conv), args)
    return _enter(
        conv,
        BROADCAST_TEXT,
        Message(
            text=(
                "📣 Write the message to send to every user, as plain text (up to "
                f"{MAX_TEXT:,} characters). You'll see a preview first."
            ),
            buttons=((Button(label="Cancel", action="cancel"),),),
        ),
    )


async def _preview(deps: FlowDeps, conv: Conversation, text: str) -> Step:
    worker = deps.broadcasts
    assert worker is not None
    cleaned = text.strip()
    if not cleaned or len(cleaned) > MAX_TEXT:
        return _reply(
            BROADCAST_TEXT,
            conv,
            Message(
                text=f"The message must be 1 to {MAX_TEXT:,} characters; this one has "
                f"{len(cleaned):,}. Write it again, shorter.",
                buttons=((Button(label="Cancel", action="cancel"),),),
            ),
        )
    html = escape_text(cleaned)
    recipients = await worker.recipients()
    seconds = max(1, round(recipients / worker.rate))
    return _reply(
        BROADCAST_CONFIRM,
        _update(conv, broadcast_text=html, recipients=recipients),
        Message(text=html),
        Message(
            text=(
                "☝️ That is the message exactly as users will get it.\n"
                f"Send it to <b>{recipients:,}</b> user(s)? Blocked users and users who "
                f"blocked the bot are left out. It takes about {seconds} s."
            ),
            buttons=(
                (Button(label=f"Send to {recipients:,} users", action="send"),),
                (
                    Button(label="Edit", action="edit"),
                    Button(label="Cancel", action="cancel"),
                ),
            ),
        ),
    )


@_admin_state
async def on_broadcast_text(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    if deps.broadcasts is None:
        return _leave(conv, Message(text="Broadcasts are not available in this process."))
    return await _preview(deps, conv, event.text)


@_admin_state
async def on_broadcast_edit(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    return _reply(
        BROADCAST_TEXT,
        _update(conv, broadcast_text=None, recipients=None),
        Message(
            text="Write the message again.",
            buttons=((Button(label="Cancel", action="cancel"),),),
            edit=True,
        ),
    )


@_admin_state
async def on_broadcast_cancel(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    return _leave(conv, Message(text="Broadcast discarded: nothing was sent.", edit=True))


@_admin_state
async def on_broadcast_send(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    worker = deps.broadcasts
    text = conv.admin.broadcast_text if conv.admin else None
    if worker is None or not text:
        return _leave(conv, Message(text="That broadcast is no longer pending.", edit=True))
    running = await worker.running()
    if running:
        return _leave(
            conv,
            Message(text=f"Broadcast #{running[0].id} is already running: nothing new was sent."),
        )
    broadcast = await worker.create(event.user.id, text)
    await _service(deps).audit(
        event.user.id,
        "broadcast",
        f"#{broadcast.id}",
        recipients=broadcast.total,
        characters=len(text),
    )
    seconds = max(1, round(broadcast.total / worker.rate))
    return _leave(
        conv,
        Message(
            text=(
                f"📣 Broadcast #{broadcast.id} started to {broadcast.total:,} user(s); about "
                f"{seconds} s. I'll report progress here. /broadcast_cancel stops it."
            ),
            edit=True,
        ),
    )


async def do_broadcast_cancel(deps: FlowDeps, conv: Conversation, event: Event, args: str) -> Step:
    worker = deps.broadcasts
    if worker is None:
        return _keep(conv, Message(text="Broadcasts are not available in this process."))
    wanted: int | None = None
    if args:
        token = args.removeprefix("#")
        if not token.isdecimal() or len(token) > 12:
            raise AdminInputError(usage("broadcast_cancel"))
        wanted = int(token)
    running = await worker.running()
    targets = [b for b in running if wanted is None or b.id == wanted]
    if not targets:
        which = f"Broadcast #{wanted} is not" if wanted is not None else "No broadcast is"
        return _keep(conv, Message(text=f"{which} running: nothing to cancel."))
    broadcast = targets[-1]
    cancelled = await worker.cancel(broadcast.id)
    await _service(deps).audit(
        event.user.id, "broadcast_cancel", f"#{broadcast.id}", cancelled=cancelled
    )
    if not cancelled:
        return _keep(conv, Message(text=f"Broadcast #{broadcast.id} had already ended."))
    return _keep(
        conv,
        Message(
            text=f"✋ Cancelling broadcast #{broadcast.id}: nobody else will get it. The final "
            "counts follow here."
        ),
    )


# --- blocked users: the engine's gate ----------------------------------------------------------


class BlockedMark(BaseModel):
    """A blocked user's conversation record: whether they have had their one notice."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    noticed: bool = False


def _blocked(record: StateRecord) -> Step:
    noticed = record.state == BLOCKED and record.data.get("noticed") is True
    replies = [] if noticed else [Message(text=BLOCKED_NOTICE)]
    return Step(state=BLOCKED, data=BlockedMark(noticed=True), replies=replies, notice=Notice())


async def access_gate(deps: FlowDeps, turn: Turn, event: Event) -> Step | None:
    """Runs first in every turn: a blocked user is answered here and reaches no flow."""
    if event.user.id in deps.admin_ids:
        return None
    record = turn.record
    if record.state == BLOCKED:
        if not turn.rate.allowed:
            return _blocked(record)  # silence, and no reading on their behalf while flooding
        profile = await deps.storage.get_profile(event.user.id)
        if profile is not None and profile.blocked:
            return _blocked(record)
        # Unblocked while the mark could not be cleared: forget it.
        return Step(state=None, data=None, replies=[Message(text=WELCOME_BACK)])
    if record.version == 0 and turn.rate.allowed:
        # No conversation yet (new, ended or expired): the mark may have gone with it.
        profile = await deps.storage.get_profile(event.user.id)
        if profile is not None and profile.blocked:
            return _blocked(record)
    return None


class StoreChatStates:
    """``conversations.deps.ChatStates`` over the state store: writes a chat's record under
    that chat's lock, as the engine would."""

    def __init__(self, store: StateStore, *, bot_id: int, ttl: int, wait: float = 15.0) -> None:
        self._store = store
        self._bot_id = bot_id
        self._ttl = ttl
        self._wait = wait

    async def put(self, chat_id: int, state: str, data: dict[str, Any]) -> bool:
        record = StateRecord(state=state, data=data, version=fresh_version())
        return await self._write(chat_id, lambda current: record)

    async def clear(self, chat_id: int, *, only_in: str) -> bool:
        return await self._write(
            chat_id, lambda current: StateRecord() if current.state == only_in else None
        )

    async def _write(
        self, chat_id: int, decide: Callable[[StateRecord], StateRecord | None]
    ) -> bool:
        try:
            turn = await self._store.begin(
                ChatKey(bot_id=self._bot_id, chat_id=chat_id), wait=self._wait
            )
        except LockTimeoutError:
            log.warning("chat %s stayed locked; its record was not updated", chat_id)
            return False
        try:
            await self._store.commit(turn, decide(turn.record), ttl=self._ttl)
        except BaseException:
            await self._store.release(turn)
            raise
        return True


# --- routing tables --------------------------------------------------------------------------

ASK_IMPLS: dict[str, Impl] = {
    "booking": do_booking,
    "user": do_user,
    "refund": do_refund,
    "block": do_block,
    "unblock": do_unblock,
}

# Admins' Telegram menu and help lines (handlers/setup.py publishes the menu to them only).
_MENU = {
    "admin": "Admin menu",
    "stats": "Statistics: today, 7d or 30d",
    "booking": "One booking in full: /booking REF",
    "user": "A user: /user ID or @username",
    "refund": "Refund: /refund REF [amount] [reason]",
    "ticketed": "Confirm a booking ticketed by hand: /ticketed REF",
    "block": "Block a user: /block ID",
    "unblock": "Unblock a user: /unblock ID",
    "broadcast": "Message every user",
    "broadcast_cancel": "Stop the running broadcast",
}

_HANDLERS: dict[str, Handler] = {
    "admin": cmd_admin,
    "stats": admin_command("stats")(do_stats),
    "booking": admin_command("booking")(do_booking),
    "user": admin_command("user")(do_user),
    "refund": admin_command("refund")(do_refund),
    "ticketed": admin_command("ticketed")(do_ticketed),
    "block": admin_command("block")(do_block),
    "unblock": admin_command("unblock")(do_unblock),
    "broadcast": admin_command("broadcast")(do_broadcast),
    "broadcast_cancel": admin_command("broadcast_cancel")(do_broadcast_cancel),
}

STATES: dict[str, State[FlowDeps, Conversation]] = {
    MENU: State(
        MENU,
        hint="Pick a button above, or type an admin command such as /booking K7MP3Q.",
        buttons={
            "menu": on_menu,
            "close": on_close,
            "stats": on_menu_stats,
            "ask": on_menu_ask,
            "broadcast": on_menu_broadcast,
            "stopcast": on_menu_stopcast,
        },
    ),
    ASK: State(
        ASK, hint="Send what was asked above.", on_text=on_ask_text, buttons={"menu": on_menu}
    ),
    REFUND_CONFIRM: State(
        REFUND_CONFIRM,
        hint="Tap “Refund” to confirm or “Don't refund”.",
        buttons={"yes": on_refund_yes, "no": on_refund_no},
    ),
    BROADCAST_TEXT: State(
        BROADCAST_TEXT,
        hint="Write the message to broadcast, or tap Cancel.",
        on_text=on_broadcast_text,
        buttons={"cancel": on_broadcast_cancel},
    ),
    BROADCAST_CONFIRM: State(
        BROADCAST_CONFIRM,
        hint="Tap “Send”, “Edit” or “Cancel” under the preview.",
        buttons={
            "send": on_broadcast_send,
            "edit": on_broadcast_edit,
            "cancel": on_broadcast_cancel,
        },
    ),
}

FLOW: Flow[FlowDeps, Conversation] = Flow(
    name="admin",
    prefix="admin:",
    states=tuple(STATES.values()),
    commands=tuple(
        Command(name, handler, menu=_MENU[name], help=views.USAGE[name], admin=True)
        for name, handler in _HANDLERS.items()
    ),
    stored_states=frozenset({BLOCKED}),
    gate=access_gate,
)
