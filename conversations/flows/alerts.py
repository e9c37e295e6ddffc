"""Price alerts flow: "Watch this route" on the results → a target price → watching; /alerts.

The results' "🔔 Watch this route" asks for a price ("under 150", "€150", "150") or offers
"Tell me when it drops"; then the results come back with the alert confirmed. /alerts lists the
traveller's alerts with Pause/Resume and Delete buttons, global so that they work wherever the
chat is. The checks and the messages they send are the alert service's (services/alerts.py);
a drop's "See flights" opens that search's results.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from conversations.data import AlertDraft, Conversation, ResultsView
from conversations.deps import FlowDeps
from conversations.engine import KEEP, Event, Pressed, State, Step
from conversations.flow import Command, Extension, Flow
from conversations.flows import search as search_flow
from services import alerts as alert_texts
from services.alert_models import AlertStatus, PriceAlert
from services.alerts import AlertLimitError, cheapest_fare
from services.flights.base import ProviderError
from services.flights.dates import format_day
from services.messages import Button, Message, Notice, esc
from services.money import Money, currency_exponent

TARGET = "alerts:target"

MAX_TARGET_MAJOR = 1_000_000  # a fare above this is a typo, not a target
MAX_PRICE_TEXT = 40
_DROP = "🔔 Tell me when it drops"
ASK_PRICE = f"Type the price to wait for, e.g. <i>under 80</i> or <i>€80</i>, or tap “{_DROP}”."
NOT_AVAILABLE = Notice(text="Price alerts are not available right now.", alert=True)
# "under €1,234.50", "below 150 eur", "€150", "150", "150,50"
_PRICE = re.compile(
    r"^(?:(?:under|below|less than|at most|max(?:imum)?|up to|for|<=?|≤)\s*)?"
    r"(?P<before>[^\d\s.,]{1,3})?\s*(?P<number>\d[\d\s.,]*)\s*(?P<after>[^\d\s.,]{1,3})?"
    r"\s*(?:or less|or under|max)?$",
    re.IGNORECASE,
)


class PriceTextError(ValueError):
    """Why a typed target is not a price; the message is said to the traveller."""


def _symbol(currency: str) -> str:
    """The sign Money.format() writes for ``currency`` ("€"), or its code."""
    shown = Money.zero(currency).format()
    sign = shown.split("0", 1)[0].strip()
    return sign or currency


def parse_target(text: str, currency: str) -> Money:
    """A target price typed in ``currency``. Raises ``PriceTextError`` saying what is wrong."""
    # Longer than any price: refused before the pattern, which backtracks on long input.
    match = _PRICE.match(text.strip()) if len(text) <= MAX_PRICE_TEXT else None
    if match is None:
        raise PriceTextError(f"I need a price. {ASK_PRICE}")
    for written in (match["before"], match["after"]):
        if written and written.upper() != currency and written != _symbol(currency):
            raise PriceTextError(
                f"Fares here are in {currency}: type the price in {currency}, "
                f"e.g. <i>under {_symbol(currency)}80</i>."
            )
    number = re.sub(r"\s", "", match["number"])
    exponent = currency_exponent(currency)
    # 1,234.50 / 1.234,50 / 150,50 / 150.50: the last separator is the decimal point unless
    # exactly three digits follow it (1,250 and 1.250 group thousands).
    last = max(number.rfind("."), number.rfind(","))
    if last != -1 and len(number) - last - 1 not in (0, 3):
        whole, fraction = number[:last], number[last + 1 :]
    else:
        whole, fraction = number, ""
    whole = re.sub(r"[.,]", "", whole)
    if not whole.isdigit() or (fraction and not fraction.isdigit()):
        raise PriceTextError(f"“{esc(text)}” is not a price I can read. {ASK_PRICE}")
    if len(fraction) > exponent:
        raise PriceTextError(
            f"{currency} has {exponent or 'no'} decimal{'s' if exponent != 1 else ''}: "
            f"e.g. <i>under {_symbol(currency)}80</i>."
        )
    try:
        amount = Decimal(f"{whole}.{fraction or '0'}")
    except InvalidOperation as exc:
        raise PriceTextError(f"“{esc(text)}” is not a price I can read. {ASK_PRICE}") from exc
    if amount <= 0:
        raise PriceTextError("The price must be more than 0, e.g. <i>under 80</i>.")
    if amount > MAX_TARGET_MAJOR:
        raise PriceTextError("That is more than any fare: type a lower price, e.g. <i>500</i>.")
    return Money.from_decimal(amount, currency)


def _keep(conv: Conversation, *replies: Message, notice: Notice | None = None) -> Step:
    return Step(state=KEEP, data=conv, replies=list(replies), notice=notice)


def _limit_text(limit: int) -> str:
    return (
        f"You already watch {limit} routes, the most I keep. Delete one in /alerts "
        "(🗑 under it), then tap “🔔 Watch this route” again."
    )


# --- "Watch this route" → the target -----------------------------------------------------------


async def on_watch(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """The results' "Watch this route": ask for the price to wait for."""
    if conv.results is None:
        return search_flow.new_search(conv)
    if deps.alerts is None:
        return _keep(conv, notice=NOT_AVAILABLE)
    query = conv.results.query
    if await deps.alerts.at_limit(event.user.id, query):
        return _keep(conv, Message(text=_limit_text(deps.alerts.max_per_user)))
    try:
        # The results just shown: from the cache, so no provider call in the usual case.
        outcome = await deps.search.search(query, user_id=event.user.id, log=False)
    except ProviderError:
        lowest = None
    else:
        # What the check will compare, or "when it drops" could start below any fare it sees.
        lowest = cheapest_fare(outcome.itineraries, deps.clock(), query)
    conv = conv.model_copy(update={"alert": AlertDraft(lowest=lowest)})
    now = f" The cheapest fare now is <b>{lowest.format()}</b>." if lowest else ""
    text = (
        f"🔔 Watch {esc(query.origin.name)} → {esc(query.destination.name)}, "
        f"{format_day(query.departure, today=deps.today())}, "
        f"{esc(query.passengers.describe())}.{now}\n\n{ASK_PRICE}"
    )
    buttons = (
        (Button(label=_DROP, action="drop"),),
        (Button(label="‹ Back to results", action="back"),),
    )
    return Step(state=TARGET, data=conv, replies=[Message(text=text, buttons=buttons)])


async def on_target_text(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    if conv.results is None:
        return search_flow.new_search(conv)
    try:
        target = parse_target(event.text, conv.results.query.currency)
    except PriceTextError as error:
        return _keep(conv, Message(text=str(error)))
    return await _watch(deps, conv, event, target)


async def on_drop(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    return await _watch(deps, conv, event, None)


async def on_back(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    conv = conv.model_copy(update={"alert": None})
    return await search_flow.on_back(deps, conv, event, pressed)


async def _watch(deps: FlowDeps, conv: Conversation, event: Event, target: Money | None) -> Step:
    if conv.results is None:
        return search_flow.new_search(conv)
    if deps.alerts is None:
        return _keep(conv, notice=NOT_AVAILABLE)
    lowest = conv.alert.lowest if conv.alert else None
    query = conv.results.query
    try:
        alert, replacing = await deps.alerts.watch(
            event.user.id, query, target=target, lowest=lowest
        )
    except AlertLimitError as error:
        done = Message(text=_limit_text(error.limit))
    else:
        wanted = (
            f"is {target.format()} or less"
            if target
            else f"drops below {lowest.format()}"
            if lowest
            else "drops"
        )
        done = Message(
            text=(
                f"🔔 Done: I'll tell you when {esc(query.origin.name)} → "
                f"{esc(query.destination.name)} on {format_day(alert.departure)} {wanted}"
                f"{' (instead of your earlier alert on it)' if replacing else ''}. "
                "/alerts lists your alerts."
            )
        )
    step = await search_flow.show_results(deps, conv.model_copy(update={"alert": None}), event)
    step.replies.insert(0, done)
    return step


# --- /alerts and its buttons ---------------------------------------------------------------------


def _alert_line(number: int, alert: PriceAlert, deps: FlowDeps) -> str:
    line = f"{number}. {alert_texts.describe(alert, today=deps.today())}"
    lowest = alert.lowest
    if lowest is not None:
        line += f" · lowest seen {lowest.format()}"
    if alert.status is AlertStatus.PAUSED:
        line += " · ⏸ paused"
    return line


async def alerts_list(deps: FlowDeps, user_id: int, *, edit: bool = False) -> Message:
    """The traveller's alerts, each with its Pause/Resume and Delete buttons."""
    assert deps.alerts is not None
    alerts = await deps.alerts.alerts_of(user_id)
    if not alerts:
        return Message(
            text=(
                "You're not watching any prices. Search for flights (/start), then tap "
                "“🔔 Watch this route” under the results."
            ),
            edit=edit,
        )
    lines = [f"<b>Your price alerts</b> ({len(alerts)} of {deps.alerts.max_per_user})"]
    lines += [_alert_line(n, alert, deps) for n, alert in enumerate(alerts, start=1)]
    lines.append("\nI check each route every few hours and tell you once per drop.")
    rows = tuple(
        (
            Button(label=f"▶️ Resume {n}", action="!alresume", arg=str(alert.id))
            if alert.status is AlertStatus.PAUSED
            else Button(label=f"⏸ Pause {n}", action="!alpause", arg=str(alert.id)),
            Button(label=f"🗑 Delete {n}", action="!aldel", arg=str(alert.id)),
        )
        for n, alert in enumerate(alerts, start=1)
    )
    return Message(text="\n".join(lines), buttons=rows, edit=edit)


async def cmd_alerts(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    if deps.alerts is None:
        return _keep(conv, Message(text="Price alerts are not available right now."))
    return _keep(conv, await alerts_list(deps, event.user.id))


def _alert_id(pressed: Pressed) -> int | None:
    return int(pressed.arg) if pressed.arg.isdigit() and len(pressed.arg) < 19 else None


async def _set_paused(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed, *, paused: bool
) -> Step:
    alert_id = _alert_id(pressed)
    if deps.alerts is None or alert_id is None:
        return _keep(conv, notice=NOT_AVAILABLE if deps.alerts is None else GONE)
    changed = await deps.alerts.set_paused(event.user.id, alert_id, paused=paused)
    notice = Notice(text="Paused." if paused else "Resumed.") if changed else GONE
    return _keep(conv, await alerts_list(deps, event.user.id, edit=True), notice=notice)


GONE = Notice(text="That alert is no longer there: /alerts shows the ones you have.")


async def btn_pause(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    return await _set_paused(deps, conv, event, pressed, paused=True)


async def btn_resume(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    return await _set_paused(deps, conv, event, pressed, paused=False)


async def btn_delete(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """Delete from the /alerts list (the list is shown again in its place)."""
    alert_id = _alert_id(pressed)
    if deps.alerts is None:
        return _keep(conv, notice=NOT_AVAILABLE)
    deleted = alert_id is not None and await deps.alerts.delete(event.user.id, alert_id)
    return _keep(
        conv,
        await alerts_list(deps, event.user.id, edit=True),
        notice=Notice(text="Deleted.") if deleted else GONE,
    )


async def btn_stop(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """ "Stop this alert" under a drop message: the message stays, a reply says it is done."""
    alert_id = _alert_id(pressed)
    if deps.alerts is None:
        return _keep(conv, notice=NOT_AVAILABLE)
    deleted = alert_id is not None and await deps.alerts.delete(event.user.id, alert_id)
    if not deleted:
        return _keep(conv, notice=GONE)
    return _keep(conv, Message(text="🔕 Alert stopped. /alerts lists the others."))


async def btn_open(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """A drop message's "See flights": that search's results, fresh, whatever the chat was
    doing (the traveller asked for them)."""
    alert_id = _alert_id(pressed)
    if deps.alerts is None:
        return _keep(conv, notice=NOT_AVAILABLE)
    alert = await deps.alerts.get(event.user.id, alert_id) if alert_id is not None else None
    query = alert.search() if alert is not None else None
    if alert is None or query is None or alert.status is AlertStatus.FINISHED:
        return _keep(conv, notice=Notice(text="That search is no longer available."))
    opened = Conversation(results=ResultsView(query=query))
    step = await search_flow.show_results(deps, opened, event, fresh=True)
    step.moves = True
    return step


STATES: dict[str, State[FlowDeps, Conversation]] = {
    TARGET: State(
        TARGET,
        hint=f"Type a price, e.g. under 80, or tap “{_DROP}”.",
        on_text=on_target_text,
        buttons={"drop": on_drop, "back": on_back},
    ),
}

FLOW: Flow[FlowDeps, Conversation] = Flow(
    name="alerts",
    prefix="alerts:",
    states=tuple(STATES.values()),
    commands=(
        Command(
            "alerts",
            cmd_alerts,
            menu="Your price alerts",
            help="the prices you watch: pause or delete them",
            position=30,
        ),
    ),
    global_buttons={
        "!alopen": btn_open,
        "!alpause": btn_pause,
        "!alresume": btn_resume,
        "!aldel": btn_delete,
        "!alstop": btn_stop,
    },
    extends=(Extension(search_flow.RESULTS, {"watch": on_watch}),),
)
