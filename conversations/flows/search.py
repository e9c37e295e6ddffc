"""Search flow: from → to → date (a return date if added) → results → detail.

One message may carry the whole search ("Lisbon to Tokyo on 20 January 2 adults"): the parts it
gives are kept as pending and each step takes its part before asking anything. Travellers default
to one adult; the stepper is reached from the results ("Change travellers").

Every question says what to type; every refusal says why and keeps the traveller where they are.
Results are not stored in the conversation: they are re-read from the search cache by the query,
which the conversation keeps.
"""

from __future__ import annotations

import re
import zlib
from datetime import date, timedelta

from pydantic import ValidationError

from conversations.calendar import (
    calendar_keyboard,
    day_arg,
    month_days,
    parse_day_arg,
    parse_month_arg,
    price_label,
)
from conversations.data import Conversation, ResultsView, SearchDraft
from conversations.deps import FlowDeps
from conversations.engine import Event, Pressed, State, Step
from conversations.flow import Flow
from services.flights import format as fmt
from services.flights.base import ProviderError, ProviderUnavailableError
from services.flights.dates import (
    DateInputError,
    format_day,
    parse_travel_date,
    travel_date_readings,
)
from services.flights.query_text import (
    SearchText,
    parse_search_text,
    split_return,
)
from services.flights.results import SortKey, results_page
from services.messages import Button, Message, Notice, esc
from services.models import (
    MAX_SEATS,
    Cabin,
    Itinerary,
    Location,
    LocationKind,
    Passengers,
    SearchQuery,
)

ORIGIN = "search:origin"
DESTINATION = "search:destination"
TRIP = "search:trip"
DEPARTURE = "search:departure"
RETURN = "search:return"
TRAVELLERS = "search:travellers"
RESULTS = "search:results"
DETAIL = "search:detail"

MAX_PLACE_TEXT = 100

ASK_ORIGIN = "Where are you flying from? City or airport, e.g. <i>Berlin</i> or <i>BER</i>."
ASK_DESTINATION = "To where? City or airport, e.g. <i>Rome</i> or <i>FCO</i>."
DATE_FORMS = "e.g. <i>14 March</i>, <i>2027-03-14</i>, <i>14/03</i>, <i>next friday</i>"


def _step(
    state: str | None, conv: Conversation, *replies: Message, notice: Notice | None = None
) -> Step:
    return Step(state=state, data=conv, replies=list(replies), notice=notice)


def new_search(conv: Conversation | None, greeting: str = "") -> Step:
    """Start a fresh search; whatever was half-done is dropped (bookings are kept)."""
    fresh = Conversation()
    text = f"{greeting}\n\n{ASK_ORIGIN}" if greeting else ASK_ORIGIN
    return _step(ORIGIN, fresh, Message(text=text))


async def search_from_idle(deps: FlowDeps, event: Event) -> Step | None:
    """A place (or a whole search) typed outside any flow starts the search with it; None when
    the text names no place, so the caller can say how to start."""
    parsed = parse_search_text(event.text)
    if not parsed.origin or len(parsed.origin) > MAX_PLACE_TEXT:
        return None
    resolution = deps.places.resolve(parsed.origin)
    if resolution.location is None and not resolution.choices:
        return None
    return await on_place_text(deps, Conversation(), event)


def _location_by_code(deps: FlowDeps, code: str) -> Location | None:
    """The place a stored code names: a city (all its airports) or one airport."""
    city = deps.places.city_location(code)
    if city is not None:
        return city
    return deps.places.airport_location(code) if deps.places.find(code) else None


async def again_button(deps: FlowDeps, user_id: int) -> Button | None:
    """'Again: Lisbon → Tokyo' for the traveller's newest search, if they made one."""
    route = await deps.storage.last_route(user_id)
    if route is None:
        return None
    origin, destination = (_location_by_code(deps, code) for code in route)
    if origin is None or destination is None:
        return None
    return Button(
        label=f"🔁 Again: {origin.name} → {destination.name}",
        action="again",
        arg=f"{origin.code}.{destination.code}",
    )


async def on_again(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """The last search's route from /start: straight to its date."""
    codes = pressed.arg.split(".")
    places = [_location_by_code(deps, code) for code in codes] if len(codes) == 2 else []
    if len(places) != 2 or places[0] is None or places[1] is None:
        return _step(ORIGIN, conv, notice=Notice(text="That search is no longer available."))
    search = SearchDraft(origin=places[0], destination=places[1])
    conv = conv.model_copy(update={"search": search})
    return await _after_route(deps, conv, event, prefix=f"{esc(_route(search))}. ")


def _prefixed(step: Step, prefix: str) -> Step:
    """The step with ``prefix`` in front of its first reply (what was understood so far)."""
    if prefix and step.replies:
        first = step.replies[0]
        step.replies[0] = first.model_copy(update={"text": prefix + first.text})
    return step


# --- places ---------------------------------------------------------------------------------

_BACK = "‹ Back"


def _back_row(state: str) -> tuple[tuple[Button, ...], ...]:
    """Back one step; nothing to go back to from the first question."""
    if state == ORIGIN:
        return ()
    return ((Button(label=_BACK, action="prev"),),)


def _place_buttons(conv: Conversation, state: str) -> tuple[tuple[Button, ...], ...]:
    rows = [
        (Button(label=loc.label, action="place", arg=str(i)),)
        for i, loc in enumerate(conv.search.choices)
    ]
    rows += [
        (Button(label=name, action="suggest", arg=str(i)),)
        for i, name in enumerate(conv.search.suggestions)
    ]
    return tuple(rows) + _back_row(state)


def _with_pending(conv: Conversation, parsed: SearchText) -> Conversation:
    """Keep the rest of a whole search typed in one message for the steps after this one."""
    update: dict[str, object] = {
        "pending_destination": parsed.destination,
        "pending_departure": parsed.departure,
        "pending_return": parsed.return_date,
    }
    if parsed.mentions_travellers:
        update.update(
            adults=max(1, parsed.adults or 1),
            children=parsed.children or 0,
            infants=parsed.infants or 0,
        )
    return conv.model_copy(update={"search": conv.search.model_copy(update=update)})


async def _resolve_place(
    deps: FlowDeps,
    conv: Conversation,
    text: str,
    state: str,
    event: Event,
    *,
    whole: bool = False,
) -> Step:
    """``whole``: part of a whole search typed at once, where a city's name means all its
    airports without asking (the results show which airport each flight uses)."""
    if len(text) > MAX_PLACE_TEXT:
        return _step(
            state,
            conv,
            Message(
                text="That's too long for a place name. Type a city or airport, e.g. <i>Lisbon</i>.",
                buttons=_back_row(state),
            ),
        )
    resolution = deps.places.resolve(text)
    search = conv.search
    if resolution.location is not None:
        return await _place_chosen(deps, conv, resolution.location, state, event)
    city = resolution.choices[0] if resolution.choices else None
    if (
        whole
        and city is not None
        and city.kind is LocationKind.CITY
        and city.name.casefold() == " ".join(text.split()).casefold()
    ):
        return await _place_chosen(deps, conv, city, state, event)
    if resolution.choices:
        conv = conv.model_copy(
            update={
                "search": search.model_copy(
                    update={"choices": list(resolution.choices[:10]), "suggestions": []}
                )
            }
        )
        return _step(
            state,
            conv,
            Message(
                text=f"Which one do you mean by “{esc(text)}”?",
                buttons=_place_buttons(conv, state),
            ),
        )
    conv = conv.model_copy(
        update={
            "search": search.model_copy(
                update={"choices": [], "suggestions": list(resolution.suggestions[:5])}
            )
        }
    )
    if resolution.suggestions:
        return _step(
            state,
            conv,
            Message(
                text=f"I couldn't find a place called “{esc(text)}”. Did you mean one of these? "
                "Or type another city or airport.",
                buttons=_place_buttons(conv, state),
            ),
        )
    return _step(
        state,
        conv,
        Message(
            text=f"I couldn't find a place called “{esc(text)}”. Try a city or an airport code, "
            "e.g. <i>Lisbon</i> or <i>LIS</i>.",
            buttons=_back_row(state),
        ),
    )


async def _place_chosen(
    deps: FlowDeps, conv: Conversation, location: Location, state: str, event: Event
) -> Step:
    search = conv.search.model_copy(update={"choices": [], "suggestions": []})
    if state == ORIGIN:
        pending = search.pending_destination
        search = search.model_copy(update={"origin": location, "pending_destination": None})
        conv = conv.model_copy(update={"search": search})
        prefix = f"From {esc(location.label)}. "
        if pending:
            return _prefixed(
                await _resolve_place(deps, conv, pending, DESTINATION, event, whole=True), prefix
            )
        return _step(
            DESTINATION,
            conv,
            Message(text=f"{prefix}{ASK_DESTINATION}", buttons=_back_row(DESTINATION)),
        )
    origin = search.origin
    if origin is not None and (
        origin.code == location.code or set(origin.airports) & set(location.airports)
    ):
        conv = conv.model_copy(update={"search": search})
        return _step(
            DESTINATION,
            conv,
            Message(
                text=f"You're already flying from {esc(origin.label)}. Where to? Pick a "
                "different city or airport.",
                buttons=_back_row(DESTINATION),
            ),
        )
    search = search.model_copy(update={"destination": location})
    conv = conv.model_copy(update={"search": search})
    return await _after_route(deps, conv, event, prefix=f"{esc(_route(search))}. ")


def _route(search: SearchDraft) -> str:
    origin = search.origin.code if search.origin else "?"
    destination = search.destination.code if search.destination else "?"
    return f"{origin} → {destination}"


async def on_place_text(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    state = ORIGIN if conv.search.origin is None else DESTINATION
    parsed = parse_search_text(event.text, with_origin=state == ORIGIN)
    place = parsed.origin if state == ORIGIN else parsed.destination
    if parsed.is_whole_search and place:
        conv = _with_pending(conv, parsed)
        if state == DESTINATION:
            conv = conv.model_copy(
                update={"search": conv.search.model_copy(update={"pending_destination": None})}
            )
        return await _resolve_place(deps, conv, place, state, event, whole=True)
    return await _resolve_place(deps, conv, event.text, state, event)


async def on_place_button(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    state = ORIGIN if conv.search.origin is None else DESTINATION
    index = _index(pressed.arg, len(conv.search.choices))
    if index is None:
        return _step(state, conv, notice=Notice(text="That choice is no longer available."))
    return await _place_chosen(deps, conv, conv.search.choices[index], state, event)


async def on_suggestion(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    state = ORIGIN if conv.search.origin is None else DESTINATION
    index = _index(pressed.arg, len(conv.search.suggestions))
    if index is None:
        return _step(state, conv, notice=Notice(text="That choice is no longer available."))
    return await _resolve_place(deps, conv, conv.search.suggestions[index], state, event)


def _index(arg: str, length: int) -> int | None:
    if not arg.isdecimal():
        return None
    index = int(arg)
    return index if 0 <= index < length else None


async def on_prev(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """Back one search step, dropping the answer given there."""
    search = conv.search.model_copy(
        update={
            "choices": [],
            "suggestions": [],
            "calendar_month": None,
            "pending_destination": None,
            "pending_departure": None,
            "pending_return": None,
        }
    )
    if search.departure is not None and search.round_trip:  # in the return step
        search = search.model_copy(update={"departure": None, "return_date": None})
        conv = conv.model_copy(update={"search": search})
        return _step(DEPARTURE, conv, await _date_question(deps, conv, DEPARTURE))
    if search.destination is not None:  # in the date step
        search = search.model_copy(
            update={"destination": None, "departure": None, "round_trip": None}
        )
        conv = conv.model_copy(update={"search": search})
        text = f"From {esc(search.origin.label)}. " if search.origin else ""
        return _step(
            DESTINATION,
            conv,
            Message(text=text + ASK_DESTINATION, buttons=_back_row(DESTINATION)),
        )
    search = search.model_copy(update={"origin": None})
    return _step(ORIGIN, conv.model_copy(update={"search": search}), Message(text=ASK_ORIGIN))


# --- dates ----------------------------------------------------------------------------------


def _today(deps: FlowDeps, conv: Conversation) -> date:
    """Today at the departure airport: what "today" means and which days have passed."""
    return deps.today_at(conv.search.origin)


async def _calendar_prices(
    deps: FlowDeps, conv: Conversation, month: date, *, min_day: date, max_day: date
) -> dict[date, str]:
    """The cheapest one-way fare per day of the shown month, where the provider or the search
    cache can tell without a search per day."""
    search = conv.search
    if search.origin is None or search.destination is None:
        return {}
    try:
        template = SearchQuery(
            origin=search.origin,
            destination=search.destination,
            departure=min_day,
            passengers=Passengers(
                adults=search.adults, children=search.children, infants=search.infants
            ),
            cabin=search.cabin,
            currency=deps.currency,
        )
    except ValidationError:
        return {}
    days = month_days(month, min_day=min_day, max_day=max_day)
    found = await deps.search.cheapest_by_day(template, days)
    return {day: price_label(price) for day, price in found.items()}


async def _date_question(
    deps: FlowDeps, conv: Conversation, state: str, *, edit: bool = False, prefix: str = ""
) -> Message:
    today = _today(deps, conv)
    first = conv.search.departure if state == RETURN and conv.search.departure else today
    month = conv.search.calendar_month or first.replace(day=1)
    last = today + timedelta(days=deps.provider.horizon_days)
    prices = (
        await _calendar_prices(deps, conv, month, min_day=first, max_day=last)
        if state == DEPARTURE
        else {}
    )
    keyboard = calendar_keyboard(month, today=today, min_day=first, max_day=last, prices=prices)
    if state == RETURN:
        question = "When do you fly back?"
        extra = (
            Button(label="One-way instead", action="oneway"),
            Button(label=_BACK, action="prev"),
        )
    elif conv.search.round_trip:
        question = "Return trip: when do you fly out?"
        extra = (
            Button(label="One-way instead", action="ret", arg="0"),
            Button(label=_BACK, action="prev"),
        )
    else:
        question = "When do you fly?"
        extra = (
            Button(label="＋ Add a return date", action="ret", arg="1"),
            Button(label=_BACK, action="prev"),
        )
    text = f"{prefix}{question} Pick a day or type it, {DATE_FORMS}."
    if state == DEPARTURE and not conv.search.round_trip:
        text += " For a return, add it: <i>20 May return 3 June</i>."
    if prices:
        who = Passengers(
            adults=conv.search.adults,
            children=conv.search.children,
            infants=conv.search.infants,
        ).describe()
        text += (
            f"\nAfter each day: the cheapest one-way fare that day in {esc(deps.currency)}, "
            f"total for {esc(who)}."
        )
    return Message(text=text, buttons=(*keyboard, extra), edit=edit)


async def on_trip(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """The one-way/return question of earlier versions (a chat stored in ``search:trip``)."""
    if pressed.arg not in ("1", "2"):
        return _step(TRIP, conv, notice=Notice(text="Pick One-way or Return."))
    search = conv.search.model_copy(
        update={"round_trip": pressed.arg == "2", "calendar_month": None}
    )
    conv = conv.model_copy(update={"search": search})
    kind = "Return trip" if search.round_trip else "One-way"
    return _step(DEPARTURE, conv, await _date_question(deps, conv, DEPARTURE, prefix=f"{kind}. "))


async def on_add_return(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """'Add a return date' / 'One-way instead' on the departure calendar."""
    search = conv.search.model_copy(update={"round_trip": pressed.arg == "1"})
    conv = conv.model_copy(update={"search": search})
    return _step(DEPARTURE, conv, await _date_question(deps, conv, DEPARTURE, edit=True))


async def on_one_way(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """From the return step: search one-way after all."""
    search = conv.search.model_copy(update={"round_trip": False, "return_date": None})
    return await _search_now(deps, conv.model_copy(update={"search": search}), event)


def _date_state(conv: Conversation) -> str:
    return RETURN if conv.search.departure is not None and conv.search.round_trip else DEPARTURE


_DAY_FIRST = re.compile(r"^\s*(\d{1,2})[/.\-](\d{1,2})\b")


def _written_day_first(text: str) -> bool:
    """'20/01': the day can only come first, so a '3/02' typed with it means 3 February."""
    match = _DAY_FIRST.match(text)
    return match is not None and int(match[1]) > 12 >= int(match[2])


async def _take_date(
    deps: FlowDeps,
    conv: Conversation,
    event: Event,
    state: str,
    text: str,
    *,
    prefix: str = "",
    day_first: bool = False,
) -> Step:
    """Read a typed date for ``state``; ask when day and month could swap (unless the same
    message already wrote a date day first), re-ask on a bad one."""
    today = _today(deps, conv)
    not_before = conv.search.departure if state == RETURN else None
    readings = travel_date_readings(
        text, today=today, not_before=not_before, horizon_days=deps.provider.horizon_days
    )
    if readings and not day_first:
        return _step(state, conv, _prefixed_message(_which_day(text, readings, today), prefix))
    try:
        day = parse_travel_date(
            text, today=today, not_before=not_before, horizon_days=deps.provider.horizon_days
        )
    except DateInputError as error:
        month = error.month
        if month is not None:
            conv = conv.model_copy(
                update={"search": conv.search.model_copy(update={"calendar_month": month})}
            )
        return _step(
            state,
            conv,
            await _date_question(deps, conv, state, prefix=f"{prefix}{esc(str(error))} "),
        )
    return await _date_chosen(
        deps, conv, event, state, day, day_first=day_first or _written_day_first(text)
    )


def _prefixed_message(message: Message, prefix: str) -> Message:
    return message.model_copy(update={"text": prefix + message.text}) if prefix else message


async def _after_route(deps: FlowDeps, conv: Conversation, event: Event, prefix: str) -> Step:
    """Origin and destination known: the date, from the typed search or asked."""
    pending = conv.search.pending_departure
    if pending:
        search = conv.search.model_copy(update={"pending_departure": None})
        return await _take_date(
            deps,
            conv.model_copy(update={"search": search}),
            event,
            DEPARTURE,
            pending,
            prefix=prefix,
        )
    return _step(DEPARTURE, conv, await _date_question(deps, conv, DEPARTURE, prefix=prefix))


async def _date_chosen(
    deps: FlowDeps,
    conv: Conversation,
    event: Event,
    state: str,
    day: date,
    *,
    day_first: bool = False,
) -> Step:
    search = conv.search
    if state == DEPARTURE:
        pending = search.pending_return
        search = search.model_copy(
            update={
                "departure": day,
                "calendar_month": None,
                "return_date": None,
                "pending_return": None,
                "round_trip": bool(search.round_trip or pending),
            }
        )
        conv = conv.model_copy(update={"search": search})
        if search.round_trip:
            prefix = f"Out on {format_day(day, today=_today(deps, conv))}. "
            if pending:
                return await _take_date(
                    deps, conv, event, RETURN, pending, prefix=prefix, day_first=day_first
                )
            return _step(RETURN, conv, await _date_question(deps, conv, RETURN, prefix=prefix))
    else:
        search = search.model_copy(update={"return_date": day, "calendar_month": None})
        conv = conv.model_copy(update={"search": search})
    return await _search_now(deps, conv, event)


async def on_date_text(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    state = _date_state(conv)
    text = event.text
    if state == DEPARTURE:
        text, back = split_return(event.text)
        if back:
            conv = conv.model_copy(
                update={"search": conv.search.model_copy(update={"pending_return": back})}
            )
    return await _take_date(deps, conv, event, state, text)


def _which_day(typed: str, readings: tuple[date, ...], today: date) -> Message:
    """Day and month could swap: the traveller picks, nothing is guessed."""
    return Message(
        text=f"Which day do you mean by “{esc(typed.strip())}”?",
        buttons=(
            tuple(
                Button(label=format_day(day, today=today), action="day", arg=day_arg(day))
                for day in readings
            ),
        ),
    )


async def on_calendar_day(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    state = _date_state(conv)
    day = parse_day_arg(pressed.arg)
    if day is None:
        return _step(state, conv, notice=Notice(text="That day can't be picked."))
    try:
        day = parse_travel_date(
            day.isoformat(),
            today=_today(deps, conv),
            not_before=conv.search.departure if state == RETURN else None,
            horizon_days=deps.provider.horizon_days,
        )
    except DateInputError as error:
        return _step(state, conv, notice=Notice(text=str(error)[:200], alert=True))
    return await _date_chosen(deps, conv, event, state, day)


async def on_calendar_page(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    state = _date_state(conv)
    month = parse_month_arg(pressed.arg)
    today = _today(deps, conv)
    if (
        month is None
        or month < today.replace(day=1)
        or month > today + timedelta(days=deps.provider.horizon_days)
    ):
        return _step(state, conv, notice=Notice(text="No flights on sale for that month."))
    conv = conv.model_copy(
        update={"search": conv.search.model_copy(update={"calendar_month": month})}
    )
    return _step(state, conv, await _date_question(deps, conv, state, edit=True))


async def on_noop(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> None:
    return None


# --- travellers stepper ---------------------------------------------------------------------

_PAX_FIELDS = {"a": "adults", "c": "children", "i": "infants"}


def _travellers_message(search: SearchDraft, *, edit: bool = False, back: bool = False) -> Message:
    def row(label: str, key: str, count: int) -> tuple[Button, ...]:
        return (
            Button(label=f"{label}: {count}", action="noop"),
            Button(label="−", action="pax", arg=f"{key}-"),
            Button(label="+", action="pax", arg=f"{key}+"),
        )

    buttons = (
        row("Adults (12+)", "a", search.adults),
        row("Children (2–11)", "c", search.children),
        row("Infants (under 2)", "i", search.infants),
        (Button(label=f"Cabin: {search.cabin.label} ⟳", action="cabin"),),
        (Button(label="🔍 Search flights", action="go"),),
        *(((Button(label="‹ Back to results", action="back"),),) if back else ()),
    )
    when = format_day(search.departure) if search.departure else ""
    if search.return_date:
        when += f" – {format_day(search.return_date)}"
    text = f"{esc(_route(search))}, {when}.\nWho is travelling? Use − and +, then Search."
    return Message(text=text, buttons=buttons, edit=edit)


async def on_change_travellers(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    """From the results: the stepper, then a new search with the new party."""
    return _step(TRAVELLERS, conv, _travellers_message(conv.search, back=True))


async def on_pax(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    key, sign = pressed.arg[:1], pressed.arg[1:]
    field = _PAX_FIELDS.get(key)
    if field is None or sign not in ("+", "-"):
        return _step(TRAVELLERS, conv, notice=Notice(text="That button isn't valid here."))
    search = conv.search
    counts = {"adults": search.adults, "children": search.children, "infants": search.infants}
    counts[field] += 1 if sign == "+" else -1
    try:
        Passengers(**counts)
    except ValidationError as error:
        reason = _first_error(error)
        if counts["adults"] < 1:
            reason = "At least one adult must travel."
        elif any(v < 0 for v in counts.values()):
            reason = "That's already zero."
        elif sum(counts.values()) > MAX_SEATS:
            reason = f"At most {MAX_SEATS} travellers can be booked together."
        return _step(TRAVELLERS, conv, notice=Notice(text=reason, alert=True))
    conv = conv.model_copy(update={"search": search.model_copy(update=counts)})
    return _step(
        TRAVELLERS,
        conv,
        _travellers_message(conv.search, edit=True, back=conv.results is not None),
    )


def _first_error(error: ValidationError) -> str:
    message = str(error.errors()[0]["msg"]).removeprefix("Value error, ")
    return message[:1].upper() + message[1:] + "."


async def on_cabin(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    cabins = list(Cabin)
    following = cabins[(cabins.index(conv.search.cabin) + 1) % len(cabins)]
    conv = conv.model_copy(update={"search": conv.search.model_copy(update={"cabin": following})})
    return _step(
        TRAVELLERS,
        conv,
        _travellers_message(conv.search, edit=True, back=conv.results is not None),
    )


async def on_travellers_text(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    return _step(
        TRAVELLERS,
        conv,
        Message(text="Use the − and + buttons above to set who is travelling, then tap Search."),
    )


async def on_go(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    return await _search_now(deps, conv, event)


async def _search_now(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    """Everything known: search (one adult unless the traveller said otherwise)."""
    search = conv.search
    if search.origin is None or search.destination is None or search.departure is None:
        return new_search(conv)
    try:
        query = SearchQuery(
            origin=search.origin,
            destination=search.destination,
            departure=search.departure,
            return_date=search.return_date,
            passengers=Passengers(
                adults=search.adults, children=search.children, infants=search.infants
            ),
            cabin=search.cabin,
            currency=deps.currency,
        )
    except ValidationError as error:
        return _step(
            DEPARTURE,
            conv,
            await _date_question(deps, conv, DEPARTURE, prefix=f"{esc(_first_error(error))} "),
        )
    view = ResultsView(query=query)
    return await show_results(deps, conv.model_copy(update={"results": view}), event, fresh=True)


# --- results --------------------------------------------------------------------------------


async def _load_results(
    deps: FlowDeps, view: ResultsView, user_id: int, *, log: bool = False
) -> tuple[list[Itinerary], int]:
    """The results the view shows, sorted and filtered. Only a new search is logged; paging
    and sorting re-read the cached results."""
    outcome = await deps.search.search(view.query, user_id=user_id, log=log)
    # Cached results age: a flight that has left (or leaves too soon to catch) is never shown,
    # nor one with fewer seats left than the party needs.
    seats = view.query.passengers.seats
    bookable = [
        it
        for it in outcome.itineraries
        if not deps.departs_too_soon(it.departure)
        and (it.seats_left is None or it.seats_left >= seats)
    ]
    page = results_page(
        bookable,
        sort=SortKey.parse(view.sort),
        direct=view.direct_only,
        page=0,
        page_size=max(1, len(bookable)),
    )
    return list(page.items), outcome.search_id


def _fingerprint(itinerary: Itinerary) -> str:
    return format(zlib.crc32(itinerary.id.encode()) & 0xFFFFFF, "x")


async def show_results(
    deps: FlowDeps, conv: Conversation, event: Event, *, fresh: bool = False, edit: bool = False
) -> Step:
    view = conv.results
    assert view is not None
    try:
        # A provider search can take seconds: "typing…" then says the bot is on it.
        items, search_id = await deps.while_typing(
            event.chat_id, _load_results(deps, view, event.user.id, log=fresh)
        )
    except ProviderUnavailableError:
        return _step(
            TRAVELLERS,
            conv,
            Message(
                text="Flight search is unavailable right now. Please try again in a minute: "
                "tap Search again.",
                buttons=_travellers_message(conv.search).buttons,
            ),
        )
    except ProviderError as error:
        return _step(
            TRAVELLERS,
            conv,
            Message(
                text=f"The flight search refused this request: {esc(error)}",
                buttons=_travellers_message(conv.search).buttons,
            ),
        )
    if fresh:
        view = view.model_copy(update={"search_id": search_id})
    page = results_page(items, sort=SortKey.parse(view.sort), page=view.page)
    view = view.model_copy(update={"page": page.number, "shown_id": None})
    conv = conv.model_copy(update={"results": view})
    replies: list[Message] = []
    header = fmt.results_header(
        view.query, demo=deps.demo_fares, count=len(items), today=_today(deps, conv)
    )
    if not items:
        text = (
            header
            + "\n\n"
            + fmt.no_results_text(
                view.query, direct_only=view.direct_only, today=_today(deps, conv)
            )
        )
        buttons: list[tuple[Button, ...]] = []
        if view.direct_only:
            buttons.append((Button(label="Show flights with stops", action="direct"),))
        buttons.append(
            (Button(label="Change date", action="redate"), Button(label="New search", action="new"))
        )
        replies.append(Message(text=text, buttons=tuple(buttons), edit=edit))
        return _step(RESULTS, conv, *replies)
    shown, start, pages = page.items, page.start, page.pages
    lines = [fmt.itinerary_line(it, number=start + i + 1) for i, it in enumerate(shown)]
    text = (
        f"{header}\n{fmt.price_basis(view.query.passengers)}\n\n"
        + "\n\n".join(lines)
        + f"\n\nPage {page.number + 1} of {pages}. Tap a number to see it and book."
    )
    pick_row = tuple(
        Button(label=str(start + i + 1), action="pick", arg=f"{start + i}.{_fingerprint(it)}")
        for i, it in enumerate(shown)
    )
    nav: list[Button] = []
    if page.has_previous:
        nav.append(Button(label="‹ Prev", action="page", arg=str(page.number - 1)))
    if page.has_next:
        nav.append(Button(label="Next ›", action="page", arg=str(page.number + 1)))
    sort_row = tuple(
        Button(label=("✓ " if view.sort == key else "") + label, action="sort", arg=key)
        for key, label in ((k.value, k.label) for k in SortKey)
    )
    filters = (
        Button(label="Direct only" + (" ✓" if view.direct_only else ""), action="direct"),
        Button(label="New search", action="new"),
    )
    changes = (
        Button(label=f"👥 {view.query.passengers.describe()} · change", action="pax_open"),
        Button(label="📅 Change date", action="redate"),
    )
    # "watch" is the alerts flow's (conversations/flows/alerts.py), as "pick" is booking's.
    watch = (Button(label="🔔 Watch this route", action="watch"),)
    buttons_all = tuple(
        row for row in (pick_row, tuple(nav), sort_row, filters, changes, watch) if row
    )
    replies.append(Message(text=text, buttons=buttons_all, edit=edit))
    return _step(RESULTS, conv, *replies)


async def on_page(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    if conv.results is None or not pressed.arg.isdecimal():
        return _step(RESULTS, conv, notice=Notice(text="That page is not available."))
    conv = conv.model_copy(
        update={"results": conv.results.model_copy(update={"page": int(pressed.arg)})}
    )
    return await show_results(deps, conv, event, edit=True)


async def on_sort(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    if conv.results is None or pressed.arg not in {k.value for k in SortKey}:
        return _step(RESULTS, conv, notice=Notice(text="That sort is not available."))
    conv = conv.model_copy(
        update={"results": conv.results.model_copy(update={"sort": pressed.arg, "page": 0})}
    )
    return await show_results(deps, conv, event, edit=True)


async def on_direct(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    if conv.results is None:
        return new_search(conv)
    view = conv.results
    conv = conv.model_copy(
        update={"results": view.model_copy(update={"direct_only": not view.direct_only, "page": 0})}
    )
    return await show_results(deps, conv, event, edit=True)


async def on_new(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    return new_search(conv)


async def on_redate(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    search = conv.search.model_copy(
        update={"departure": None, "return_date": None, "calendar_month": None}
    )
    conv = conv.model_copy(update={"search": search, "results": None})
    return _step(DEPARTURE, conv, await _date_question(deps, conv, DEPARTURE))


async def find_picked(
    deps: FlowDeps, conv: Conversation, event: Event, arg: str
) -> Itinerary | None:
    """The itinerary a result button points at, if the list is still the one the user saw."""
    if conv.results is None:
        return None
    index_text, _, fingerprint = arg.partition(".")
    if not index_text.isdecimal():
        return None
    items, _ = await _load_results(deps, conv.results, event.user.id)
    index = int(index_text)
    if index >= len(items) or _fingerprint(items[index]) != fingerprint:
        return None
    return items[index]


async def on_pick(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    try:
        itinerary = await find_picked(deps, conv, event, pressed.arg)
    except ProviderError:
        itinerary = None
    if itinerary is None or conv.results is None:
        if conv.results is None:
            return new_search(conv)
        step = await show_results(deps, conv, event)
        step.notice = Notice(text="The results were refreshed: pick again from the new list.")
        return step
    view = conv.results.model_copy(update={"shown_id": itinerary.id})
    conv = conv.model_copy(update={"results": view})
    if view.search_id is not None:
        await deps.storage.mark_search_stage(view.search_id, "chosen")
    text = fmt.itinerary_detail(
        itinerary, passengers=view.query.passengers, places=deps.places, today=_today(deps, conv)
    )
    buttons = (
        (Button(label=f"Book for {itinerary.price.format()}", action="book", arg=pressed.arg),),
        (Button(label="‹ Back to results", action="back"),),
    )
    return _step(DETAIL, conv, Message(text=text, buttons=buttons, edit=True))


async def on_back(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    if conv.results is None:
        return new_search(conv)
    return await show_results(deps, conv, event, edit=True)


STATES: dict[str, State[FlowDeps, Conversation]] = {
    ORIGIN: State(
        ORIGIN,
        hint="Type the city or airport you're flying from, e.g. Berlin or BER.",
        on_text=on_place_text,
        buttons={"place": on_place_button, "suggest": on_suggestion, "again": on_again},
    ),
    DESTINATION: State(
        DESTINATION,
        hint="Type the city or airport you're flying to, e.g. Rome or FCO.",
        on_text=on_place_text,
        buttons={"place": on_place_button, "suggest": on_suggestion, "prev": on_prev},
    ),
    TRIP: State(TRIP, hint="Tap One-way or Return above.", buttons={"trip": on_trip}),
    DEPARTURE: State(
        DEPARTURE,
        hint="Pick a day on the calendar or type a date.",
        on_text=on_date_text,
        buttons={
            "day": on_calendar_day,
            "cal": on_calendar_page,
            "noop": on_noop,
            "ret": on_add_return,
            "prev": on_prev,
        },
    ),
    RETURN: State(
        RETURN,
        hint="Pick a return day on the calendar or type a date.",
        on_text=on_date_text,
        buttons={
            "day": on_calendar_day,
            "cal": on_calendar_page,
            "noop": on_noop,
            "oneway": on_one_way,
            "prev": on_prev,
        },
    ),
    TRAVELLERS: State(
        TRAVELLERS,
        hint="Use the − and + buttons to set who is travelling, then tap Search.",
        on_text=on_travellers_text,
        buttons={
            "pax": on_pax,
            "cabin": on_cabin,
            "go": on_go,
            "noop": on_noop,
            "back": on_back,
        },
    ),
    RESULTS: State(
        RESULTS,
        hint="Tap a flight's number to see it, use the buttons to sort or page, or /cancel.",
        # A result's number ("pick") is the booking flow's: it opens the booking with the detail.
        buttons={
            "page": on_page,
            "sort": on_sort,
            "direct": on_direct,
            "new": on_new,
            "redate": on_redate,
            "pax_open": on_change_travellers,
        },
    ),
    # The detail view of chats stored by earlier versions; its "Book" is the booking flow's.
    DETAIL: State(
        DETAIL,
        hint="Tap Book to continue with this flight, or Back to see the other results.",
        buttons={"back": on_back},
    ),
}

FLOW: Flow[FlowDeps, Conversation] = Flow(
    name="search", prefix="search:", states=tuple(STATES.values())
)
