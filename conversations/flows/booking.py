"""Booking flow: re-price → each traveller's details → review (edit any field) → pay.

The price charged is the one on the itinerary the provider re-checked, stored on the booking by
the booking service: nothing typed or pressed can change it.
"""

from __future__ import annotations

import enum
from datetime import date
from typing import Any

from conversations.data import BookingDraft, Conversation, TravellerDraft
from conversations.deps import FlowDeps
from conversations.engine import KEEP, Event, Pressed, State, Step
from conversations.flow import Extension, Flow
from conversations.flows import search as search_flow
from services import redact, texts
from services import travellers as fields
from services.bookings import BookingError
from services.flights import format as fmt
from services.flights.base import ProviderError, ProviderUnavailableError
from services.flights.dates import format_date
from services.messages import Button, Message, Notice, esc
from services.models import Itinerary, Traveller, mask_document
from services.payments.base import PaymentError

PRICE = "book:price"
FIELD = "book:field"
REVIEW = "book:review"
EDIT = "book:edit"
PAYMENT = "book:payment"

QUESTIONS = {
    "full_name": "Full name as in the passport, first names then last name? e.g. <i>Ana Silva</i>.",
    "first_name": "First name as in the passport? Latin letters, e.g. <i>Maria</i>.",
    "last_name": "Last name as in the passport? e.g. <i>Silva</i>.",
    "birth_date": "Date of birth? e.g. <i>1990-05-17</i> or <i>17.05.1990</i>.",
    "gender": "Gender as shown in the passport?",
    "nationality": "Nationality? Country name or code, e.g. <i>Portugal</i> or <i>PT</i>.",
    "passport_number": "Passport number? Letters and digits as printed, e.g. <i>CA1234567</i>.",
    "passport_expiry": "Passport expiry date? e.g. <i>2031-08-20</i>.",
    "email": "Email for the confirmation? e.g. <i>maria@example.com</i>.",
    "phone": "Phone with country code, e.g. <i>+351 912 345 678</i>, or tap Skip.",
}


# The order questions are asked in: the name in one answer (first and last name stored apart).
ASKED_PERSON_FIELDS = ("full_name", *fields.PERSON_FIELDS[2:])


def _next_field(draft: BookingDraft) -> str | None:
    """The first question the current traveller has not answered, in asking order."""
    values = draft.travellers[draft.current].values
    for field in ASKED_PERSON_FIELDS + (fields.LEAD_FIELDS if draft.current == 0 else ()):
        if field == "full_name":
            if "first_name" not in values:
                return "full_name"
            if "last_name" not in values:
                return "last_name"
        elif field not in values:
            return field
    return None


_NAME_PARTICLES = {
    "da", "das", "de", "del", "della", "der", "di", "do", "dos", "du", "la", "le", "van",
    "von", "ter", "ten", "bin", "al", "el", "st", "mac",
}  # fmt: skip


def split_full_name(text: str) -> tuple[str, str | None]:
    """'Ana Maria da Silva' → ('ANA MARIA', 'DA SILVA'): the last name is the last word with
    the particles before it. One word gives only a first name (the last is then asked).
    Raises ``fields.FieldError`` naming what is wrong."""
    words = text.split()
    if len(words) < 2:
        return fields.parse_first_name(text), None
    cut = len(words) - 1
    while cut > 1 and words[cut - 1].lower() in _NAME_PARTICLES:
        cut -= 1
    first = fields.parse_first_name(" ".join(words[:cut]))
    last = fields.parse_last_name(" ".join(words[cut:]))
    return first, last


def printed_name(values: dict[str, Any]) -> str:
    """How airlines print the name on a ticket: 'SILVA/ANA MARIA'."""
    return f"{values.get('last_name', '')}/{values.get('first_name', '')}"


def _step(
    state: str | None, conv: Conversation, *replies: Message, notice: Notice | None = None
) -> Step:
    return Step(state=state, data=conv, replies=list(replies), notice=notice)


# --- re-price -------------------------------------------------------------------------------


async def on_book(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """Book from the detail view (a chat stored in ``search:detail`` by an earlier version)."""
    try:
        itinerary = await search_flow.find_picked(deps, conv, event, pressed.arg)
    except ProviderError:
        itinerary = None
    if itinerary is None or conv.results is None:
        return await search_flow.on_back(deps, conv, event, pressed)
    return await _book(deps, conv, event, itinerary, from_state=search_flow.DETAIL)


async def on_pick_and_book(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    """A result's number: its detail, the price checked, and the first traveller question in
    one step (Back returns to the results)."""
    try:
        itinerary = await search_flow.find_picked(deps, conv, event, pressed.arg)
    except ProviderError:
        itinerary = None
    if itinerary is None or conv.results is None:
        return await search_flow.on_pick(deps, conv, event, pressed)
    view = conv.results.model_copy(update={"shown_id": itinerary.id})
    conv = conv.model_copy(update={"results": view})
    if view.search_id is not None:
        await deps.storage.mark_search_stage(view.search_id, "chosen")
    detail = fmt.itinerary_detail(
        itinerary,
        passengers=view.query.passengers,
        places=deps.places,
        today=deps.today_at(view.query.origin),
    )
    return await _book(deps, conv, event, itinerary, from_state=search_flow.RESULTS, detail=detail)


async def _book(
    deps: FlowDeps,
    conv: Conversation,
    event: Event,
    itinerary: Itinerary,
    *,
    from_state: str,
    detail: str = "",
) -> Step:
    assert conv.results is not None
    if deps.departs_too_soon(itinerary.departure):
        return await _too_soon(deps, conv, event)
    passengers = conv.results.query.passengers
    try:
        check = await deps.bookings.recheck(itinerary, passengers)
    except ProviderUnavailableError:
        return _step(
            from_state,
            conv,
            notice=Notice(
                text="Couldn't check the price right now. Try again in a minute.", alert=True
            ),
        )
    except ProviderError as error:
        return _step(
            from_state,
            conv,
            Message(text=f"The airline's system refused to price this flight: {esc(error)}"),
        )
    if not check.available:
        step = await search_flow.show_results(deps, conv, event)
        step.replies.insert(
            0, Message(text="Sorry, that fare has just sold out. Here are the other flights.")
        )
        return step
    updated = itinerary.model_copy(
        update={
            "price": check.price,
            "booking_token": check.booking_token or itinerary.booking_token,
            "fare_expires_at": check.expires_at or itinerary.fare_expires_at,
        }
    )
    if check.price != itinerary.price:
        # The split and taxes were for the old price: say only what is known now.
        updated = updated.model_copy(update={"price_lines": (), "taxes": None})
    draft = BookingDraft(
        itinerary=updated,
        travellers=[TravellerDraft(category=c) for c in passengers.categories],
        field="full_name",
    )
    conv = conv.model_copy(update={"booking": draft})
    head = f"{detail}\n\n" if detail else ""
    if check.price != itinerary.price:
        return _step(
            PRICE,
            conv,
            Message(
                text=(
                    f"{head}The price has changed: it was {itinerary.price.format()}, "
                    f"it is now <b>{check.price.format()}</b> for {passengers.describe()}."
                ),
                buttons=(
                    (Button(label=f"Continue at {check.price.format()}", action="accept"),),
                    (Button(label="‹ Back to results", action="back"),),
                ),
            ),
        )
    return await _ask(
        deps,
        conv,
        event.user.id,
        prefix=f"{head}Price checked: {check.price.format()} is still available.\n\n",
    )


async def _too_soon(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    """Back to the results (which no longer list it) for a flight that left or leaves soon."""
    hours = int(deps.min_time_before_departure.total_seconds() // 3600)
    conv = conv.model_copy(update={"booking": None})
    if conv.results is None:
        return search_flow.new_search(conv)
    step = await search_flow.show_results(deps, conv, event)
    step.replies.insert(
        0,
        Message(
            text=f"That flight has left or leaves in less than {hours} hours, too soon to "
            "book. Pick another one."
        ),
    )
    return step


async def on_accept_price(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    return await _ask(deps, conv, event.user.id)


async def on_back_to_results(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    conv = conv.model_copy(update={"booking": None})
    return await search_flow.on_back(deps, conv, event, pressed)


# --- traveller fields -----------------------------------------------------------------------


async def _ask(
    deps: FlowDeps, conv: Conversation, user_id: int, *, prefix: str = "", edit: bool = False
) -> Step:
    draft = conv.booking
    assert draft is not None
    traveller = draft.travellers[draft.current]
    who = f"Traveller {draft.current + 1} of {len(draft.travellers)} ({traveller.category.value})"
    buttons: list[tuple[Button, ...]] = []
    if draft.field == "gender":
        buttons.append(
            (
                Button(label="Female", action="gender", arg="F"),
                Button(label="Male", action="gender", arg="M"),
            )
        )
    if draft.field == "phone":
        buttons.append((Button(label="Skip", action="skip"),))
    if draft.field in ("full_name", "first_name") and not draft.editing and not traveller.values:
        saved = await _saved_for(deps, user_id, draft)
        buttons.extend(
            (Button(label=f"Use {t.full_name}", action="saved", arg=str(i)),) for i, t in saved
        )
    if (
        draft.field == "birth_date"
        and not draft.editing
        and {"first_name", "last_name"} <= traveller.values.keys()
    ):
        # The name as it will be printed, to confirm; typing the date of birth accepts it too.
        buttons.append((Button(label=f"✓ {printed_name(traveller.values)}", action="nameok"),))
        buttons.append(
            (
                Button(label="⇄ Swap first and last name", action="swap"),
                Button(label="✏️ Type them apart", action="apart"),
            )
        )
    if draft.editing:
        buttons.append((Button(label="‹ Back to review", action="review"),))
    elif draft.current == 0 and not traveller.values:
        buttons.append((Button(label="‹ Back to results", action="back"),))
    text = f"{prefix}{who}: {QUESTIONS[draft.field]}"
    return _step(FIELD, conv, Message(text=text, buttons=tuple(buttons), edit=edit))


async def _saved_for(
    deps: FlowDeps, user_id: int, draft: BookingDraft
) -> list[tuple[int, Traveller]]:
    """Saved travellers of the right category not already on this booking."""
    profile = await deps.storage.get_profile(user_id)
    if profile is None:
        return []
    category = draft.travellers[draft.current].category
    used = {
        (t.values.get("first_name"), t.values.get("last_name"), t.values.get("birth_date"))
        for t in draft.travellers
    }
    _, last_day = fields.travel_dates(draft.itinerary)
    out = []
    for i, saved in enumerate(profile.saved_travellers[:5]):
        if (saved.first_name, saved.last_name, saved.birth_date.isoformat()) in used:
            continue
        if fields.category_for(saved.birth_date, last_day) is category:
            out.append((i, saved))
    return out


def _parse(field: str, text: str, draft: BookingDraft) -> Any:
    """Normalize one answer or raise ``fields.FieldError`` with a message naming the field."""
    category = draft.travellers[draft.current].category
    first_day, last_day = fields.travel_dates(draft.itinerary)
    return fields.parse_field(
        field, text, category=category, first_day=first_day, last_day=last_day
    )


async def _store_value(
    deps: FlowDeps,
    conv: Conversation,
    user_id: int,
    value: Any,
    *,
    more: dict[str, Any] | None = None,
    prefix: str = "",
) -> Step:
    draft = conv.booking
    assert draft is not None
    traveller = draft.travellers[draft.current]
    values = {**traveller.values, **(more or {})}
    if draft.field != "full_name":
        values[draft.field] = value
    redact.remember(
        *(values[name] for name in set(redact.PERSONAL_FIELDS) & {draft.field, *(more or {})})
    )
    travellers = list(draft.travellers)
    travellers[draft.current] = traveller.model_copy(update={"values": values})
    draft = draft.model_copy(update={"travellers": travellers})
    return await _advance(deps, conv.model_copy(update={"booking": draft}), user_id, prefix=prefix)


def _said(field: str, value: Any) -> str:
    """What was understood, shown in front of the next question."""
    if field == "birth_date" and isinstance(value, str):
        return f"Born {format_date(date.fromisoformat(value))}. "
    if field == "gender":
        return {"F": "Female. ", "M": "Male. "}.get(str(value), "")
    if field == "nationality":
        return f"{esc(fields.country_label(str(value)))}. "
    return ""


async def _advance(deps: FlowDeps, conv: Conversation, user_id: int, *, prefix: str = "") -> Step:
    draft = conv.booking
    assert draft is not None
    if draft.editing:
        return await show_review(
            deps, conv.model_copy(update={"booking": draft.model_copy(update={"editing": False})})
        )
    following = _next_field(draft)
    if following is not None:
        draft = draft.model_copy(update={"field": following})
        return await _ask(deps, conv.model_copy(update={"booking": draft}), user_id, prefix=prefix)
    if draft.current + 1 < len(draft.travellers):
        draft = draft.model_copy(update={"current": draft.current + 1, "field": "full_name"})
        return await _ask(
            deps, conv.model_copy(update={"booking": draft}), user_id, prefix="Thanks! "
        )
    return await show_review(deps, conv.model_copy(update={"booking": draft}))


async def on_field_text(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    draft = conv.booking
    if draft is None:
        return search_flow.new_search(conv)
    return await _field_answer(deps, conv, event.user.id, event.text)


async def _field_answer(deps: FlowDeps, conv: Conversation, user_id: int, text: str) -> Step:
    draft = conv.booking
    assert draft is not None
    if draft.field == "full_name":
        return await _full_name_answer(deps, conv, user_id, text)
    if draft.field in DATE_FIELDS:
        asked = _which_date(draft, text)
        if asked is not None:
            return _step(FIELD, conv, asked)
    try:
        value = _parse(draft.field, text, draft)
    except fields.FieldError as error:
        buttons = tuple(
            (Button(label=fields.country_label(code), action="nat", arg=code),)
            for code in error.suggestions[:5]
            if draft.field == "nationality"
        )
        return _step(FIELD, conv, Message(text=esc(str(error)), buttons=buttons))
    if isinstance(value, date):
        value = value.isoformat()
    elif isinstance(value, enum.Enum):
        value = value.value
    return await _store_value(
        deps, conv, user_id, value, prefix="" if draft.editing else _said(draft.field, value)
    )


async def _full_name_answer(deps: FlowDeps, conv: Conversation, user_id: int, text: str) -> Step:
    draft = conv.booking
    assert draft is not None
    try:
        first, last = split_full_name(text)
    except fields.FieldError as error:
        return _step(FIELD, conv, Message(text=esc(str(error))))
    names = {"first_name": first} | ({"last_name": last} if last else {})
    prefix = (
        f"On the ticket: <b>{esc(printed_name(names))}</b> (last name/first names).\n\n"
        if last
        else f"First name {esc(first)}. "
    )
    return await _store_value(deps, conv, user_id, None, more=names, prefix=prefix)


async def on_name_ok(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    """The printed name confirmed: nothing changes, the date of birth is still asked."""
    return Step(
        state=KEEP,
        data=conv,
        notice=Notice(text="Name confirmed. Now type the date of birth."),
    )


async def on_swap_names(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    draft = conv.booking
    values = draft.travellers[draft.current].values if draft else {}
    if draft is None or "first_name" not in values or "last_name" not in values:
        return _step(FIELD, conv, notice=Notice(text="That button isn't valid here."))
    try:
        first = fields.parse_first_name(str(values["last_name"]))
        last = fields.parse_last_name(str(values["first_name"]))
    except fields.FieldError as error:
        return _step(FIELD, conv, notice=Notice(text=str(error)[:200], alert=True))
    swapped = {**values, "first_name": first, "last_name": last}
    travellers = list(draft.travellers)
    travellers[draft.current] = travellers[draft.current].model_copy(update={"values": swapped})
    conv = conv.model_copy(update={"booking": draft.model_copy(update={"travellers": travellers})})
    return await _ask(
        deps,
        conv,
        event.user.id,
        edit=True,
        prefix=f"On the ticket: <b>{esc(printed_name(swapped))}</b> (last name/first names).\n\n",
    )


async def on_names_apart(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    """Ask first and last name one at a time (names the split read wrongly)."""
    draft = conv.booking
    if draft is None:
        return search_flow.new_search(conv)
    values = {
        k: v
        for k, v in draft.travellers[draft.current].values.items()
        if k not in ("first_name", "last_name")
    }
    travellers = list(draft.travellers)
    travellers[draft.current] = travellers[draft.current].model_copy(update={"values": values})
    draft = draft.model_copy(update={"travellers": travellers, "field": "first_name"})
    return await _ask(deps, conv.model_copy(update={"booking": draft}), event.user.id)


DATE_FIELDS = ("birth_date", "passport_expiry")


def _which_date(draft: BookingDraft, text: str) -> Message | None:
    """When day and month could swap and both make a valid answer, ask which one is meant."""
    readings = fields.date_readings(text)
    if readings is None:
        return None
    valid = []
    for day in readings:
        try:
            _parse(draft.field, day.isoformat(), draft)
        except fields.FieldError:
            continue
        valid.append(day)
    if len(valid) != 2:
        return None
    return Message(
        text=f"Which date do you mean by “{esc(text.strip())}”?",
        buttons=(
            tuple(
                Button(label=format_date(day), action="date", arg=day.isoformat()) for day in valid
            ),
        ),
    )


async def on_date_choice(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    draft = conv.booking
    try:
        picked = date.fromisoformat(pressed.arg)
    except ValueError:
        picked = None
    if draft is None or draft.field not in DATE_FIELDS or picked is None:
        return _step(FIELD, conv, notice=Notice(text="That button isn't valid here."))
    return await _field_answer(deps, conv, event.user.id, picked.isoformat())


async def on_gender(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    draft = conv.booking
    if draft is None or draft.field != "gender" or pressed.arg not in ("F", "M"):
        return _step(FIELD, conv, notice=Notice(text="That button isn't valid here."))
    return await _field_answer(deps, conv, event.user.id, pressed.arg)


async def on_nationality(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    draft = conv.booking
    if draft is None or draft.field != "nationality" or len(pressed.arg) != 2:
        return _step(FIELD, conv, notice=Notice(text="That button isn't valid here."))
    return await _field_answer(deps, conv, event.user.id, pressed.arg)


async def on_skip(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    draft = conv.booking
    if draft is None or draft.field != "phone":
        return _step(FIELD, conv, notice=Notice(text="This answer can't be skipped."))
    return await _store_value(deps, conv, event.user.id, None)


async def on_saved(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    draft = conv.booking
    if draft is None:
        return search_flow.new_search(conv)
    saved = dict(await _saved_for(deps, event.user.id, draft))
    if not pressed.arg.isdecimal() or int(pressed.arg) not in saved:
        return _step(FIELD, conv, notice=Notice(text="That saved traveller is not available."))
    person = saved[int(pressed.arg)]
    values = person.model_dump(mode="json", exclude={"category", "passport_masked"})
    first_day, last_day = fields.travel_dates(draft.itinerary)
    try:
        fields.parse_field(
            "passport_expiry", values["passport_expiry"], first_day=first_day, last_day=last_day
        )
    except fields.FieldError as error:
        values.pop("passport_expiry")
        travellers = list(draft.travellers)
        travellers[draft.current] = travellers[draft.current].model_copy(update={"values": values})
        draft = draft.model_copy(update={"travellers": travellers, "field": "passport_expiry"})
        return await _ask(
            deps,
            conv.model_copy(update={"booking": draft}),
            event.user.id,
            prefix=f"{esc(str(error))}\n\n",
        )
    if draft.current != 0:
        values.pop("email", None)
        values.pop("phone", None)
    travellers = list(draft.travellers)
    travellers[draft.current] = travellers[draft.current].model_copy(update={"values": values})
    draft = draft.model_copy(update={"travellers": travellers})
    conv = conv.model_copy(update={"booking": draft})
    return await _advance(deps, conv, event.user.id, prefix=f"Using {esc(person.full_name)}. ")


# --- review ---------------------------------------------------------------------------------


def build_travellers(draft: BookingDraft) -> tuple[Traveller, ...]:
    first_day, last_day = fields.travel_dates(draft.itinerary)
    return tuple(
        fields.build_traveller(
            t.category, t.values, first_day=first_day, last_day=last_day, lead=i == 0
        )
        for i, t in enumerate(draft.travellers)
    )


def _traveller_lines(draft: BookingDraft) -> list[str]:
    lines = []
    for i, t in enumerate(draft.travellers):
        v = t.values
        born = (
            date.fromisoformat(v["birth_date"])
            if isinstance(v.get("birth_date"), str)
            else v.get("birth_date")
        )
        expiry = (
            date.fromisoformat(v["passport_expiry"])
            if isinstance(v.get("passport_expiry"), str)
            else v.get("passport_expiry")
        )
        line = (
            f"{i + 1}. <b>{esc(v.get('first_name', ''))} {esc(v.get('last_name', ''))}</b>, {t.category.value}\n"
            f"   born {format_date(born) if born else '?'}, {esc(v.get('gender', ''))}, "
            f"{esc(v.get('nationality', ''))}, passport {esc(mask_document(str(v.get('passport_number', ''))))}"
            f" valid to {format_date(expiry) if expiry else '?'}"
        )
        if i == 0:
            line += f"\n   ✉️ {esc(v.get('email', ''))}" + (
                f" · ☎️ {esc(v['phone'])}" if v.get("phone") else ""
            )
        lines.append(line)
    return lines


async def show_review(
    deps: FlowDeps, conv: Conversation, *, edit: bool = False, prefix: str = ""
) -> Step:
    draft = conv.booking
    assert draft is not None
    if conv.results is not None and conv.results.search_id is not None:
        await deps.storage.mark_search_stage(conv.results.search_id, "reviewed")
    price = draft.itinerary.price
    passengers = (
        conv.results.query.passengers.describe()
        if conv.results
        else f"{len(draft.travellers)} travellers"
    )
    itinerary_text = "\n".join(texts.itinerary_lines(draft.itinerary))
    # The split, the taxes, and what the fare allows are shown before Pay, not after.
    split = fmt.price_lines(draft.itinerary)[:-1]
    text = (
        f"{prefix}<b>Review your booking</b>\n\n"
        f"{itinerary_text}\n\n"
        "<b>Travellers</b>\n" + "\n".join(_traveller_lines(draft)) + "\n\n"
        "<b>Fare rules</b>\n" + "\n".join(fmt.rules_lines(draft.itinerary)) + "\n\n"
        "<b>Price</b>\n" + "".join(f"{line}\n" for line in split) + f"Fare for {passengers}: "
        f"{price.format()}\n<b>Total: {price.format()}</b>"
    )
    if draft.itinerary.is_demo:
        text += "\n<i>Demo fare: no real ticket is issued.</i>"
    buttons = (
        (Button(label=f"Pay {price.format()}", action="pay"),),
        (Button(label="✏️ Edit", action="edit"), Button(label="Cancel", action="cancel")),
    )
    return _step(REVIEW, conv, Message(text=text, buttons=buttons, edit=edit))


async def on_edit(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    draft = conv.booking
    if draft is None:
        return search_flow.new_search(conv)
    if len(draft.travellers) > 1 and not pressed.arg:
        people = [
            (
                Button(
                    label=f"{i + 1}. {t.values.get('first_name', '')} {t.values.get('last_name', '')}",
                    action="edit",
                    arg=str(i),
                ),
            )
            for i, t in enumerate(draft.travellers)
        ]
        rows = (*people, (Button(label="‹ Back to review", action="review"),))
        return _step(
            EDIT,
            conv,
            Message(text="Whose details do you want to change?", buttons=rows, edit=True),
        )
    index = int(pressed.arg) if pressed.arg.isdecimal() else 0
    if index >= len(draft.travellers):
        return _step(EDIT, conv, notice=Notice(text="No such traveller."))
    names = fields.fields_for(index)
    rows_list = [
        tuple(Button(label=f.label, action="editf", arg=f"{index}.{f}") for f in names[i : i + 2])
        for i in range(0, len(names), 2)
    ]
    rows_list.append((Button(label="‹ Back to review", action="review"),))
    return _step(
        EDIT,
        conv,
        Message(
            text=f"Which detail of traveller {index + 1} do you want to change?",
            buttons=tuple(rows_list),
            edit=True,
        ),
    )


async def on_edit_field(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    draft = conv.booking
    index_text, _, field = pressed.arg.partition(".")
    if (
        draft is None
        or not index_text.isdecimal()
        or int(index_text) >= len(draft.travellers)
        or field not in fields.fields_for(int(index_text))
    ):
        return _step(EDIT, conv, notice=Notice(text="That detail can't be edited."))
    draft = draft.model_copy(update={"current": int(index_text), "field": field, "editing": True})
    return await _ask(deps, conv.model_copy(update={"booking": draft}), event.user.id)


async def on_review(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    if conv.booking is None:
        return search_flow.new_search(conv)
    draft = conv.booking.model_copy(update={"editing": False})
    return await show_review(deps, conv.model_copy(update={"booking": draft}), edit=True)


async def on_cancel_review(
    deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed
) -> Step:
    return Step(
        state=None,
        data=None,
        replies=[Message(text="Booking cancelled; nothing was charged. /start to search again.")],
    )


# --- payment --------------------------------------------------------------------------------


async def on_pay(deps: FlowDeps, conv: Conversation, event: Event, pressed: Pressed) -> Step:
    draft = conv.booking
    if draft is None:
        return search_flow.new_search(conv)
    try:
        travellers = build_travellers(draft)
    except fields.FieldError as error:
        return await show_review(deps, conv, prefix=f"{esc(str(error))}\n\n")
    if deps.departs_too_soon(draft.itinerary.departure):
        return await _too_soon(deps, conv, event)
    try:
        booking, session = await deps.bookings.start_checkout(
            event.user.id, draft.itinerary, travellers
        )
    except BookingError as error:
        # Every refusal the booking service gives is written for the traveller (a fare the
        # airline would not hold, a cap on links...): nothing was charged.
        return await show_review(deps, conv, prefix=f"{esc(str(error))}\n\n")
    except PaymentError:
        return _step(
            REVIEW,
            conv,
            Message(
                text="I couldn't create the payment link just now. Please tap Pay again in a minute."
            ),
        )
    profile = await deps.storage.get_profile(event.user.id)
    earlier = profile.saved_travellers if profile else ()
    await deps.storage.save_travellers(event.user.id, merge_saved(travellers, earlier))
    conv = conv.model_copy(update={"booking": draft.checked_out(booking.reference)})
    return _step(
        PAYMENT,
        conv,
        texts.payment_link(booking, session.url, session.expires_at, sandbox=deps.sandbox_payments),
    )


MAX_SAVED = 5


def merge_saved(
    newest: tuple[Traveller, ...], earlier: tuple[Traveller, ...]
) -> tuple[Traveller, ...]:
    """The travellers to offer next time: this booking's first, then earlier ones, one entry
    per person (name and birth date), at most ``MAX_SAVED``."""
    kept: dict[tuple[str, str, date], Traveller] = {}
    for person in (*newest, *earlier):
        kept.setdefault((person.first_name, person.last_name, person.birth_date), person)
    return tuple(kept.values())[:MAX_SAVED]


async def on_payment_text(deps: FlowDeps, conv: Conversation, event: Event) -> Step:
    reference = conv.booking.reference if conv.booking else None
    booking = (
        await deps.storage.get_booking_by_reference(reference, user_id=event.user.id)
        if reference
        else None
    )
    if booking is None or not booking.status.unpaid:
        status = f"Booking {esc(reference)} is {booking.status.label.lower()}. " if booking else ""
        return Step(
            state=None,
            data=None,
            replies=[Message(text=f"{status}/start to search for another flight, or /mybookings.")],
        )
    return _step(
        PAYMENT,
        conv,
        Message(
            text=f"Waiting for your payment for booking <b>{esc(booking.reference)}</b>: use the Pay button above.",
            buttons=(
                (
                    Button(
                        label="Send the payment link again", action="!renew", arg=booking.reference
                    ),
                ),
            ),
        ),
    )


STATES: dict[str, State[FlowDeps, Conversation]] = {
    PRICE: State(
        PRICE,
        hint="Tap Continue to book at the new price, or Back to see the other results.",
        buttons={"accept": on_accept_price, "back": on_back_to_results},
    ),
    FIELD: State(
        FIELD,
        hint="Type the answer to the question above, or /cancel.",
        on_text=on_field_text,
        buttons={
            "gender": on_gender,
            "date": on_date_choice,
            "nat": on_nationality,
            "skip": on_skip,
            "saved": on_saved,
            "review": on_review,
            "swap": on_swap_names,
            "nameok": on_name_ok,
            "apart": on_names_apart,
            "back": on_back_to_results,
        },
    ),
    REVIEW: State(
        REVIEW,
        hint="Check the details above, then tap Pay, Edit or Cancel.",
        buttons={"pay": on_pay, "edit": on_edit, "cancel": on_cancel_review},
    ),
    EDIT: State(
        EDIT,
        hint="Tap the detail you want to change, or Back to review.",
        buttons={"edit": on_edit, "editf": on_edit_field, "review": on_review},
    ),
    PAYMENT: State(
        PAYMENT,
        hint="Use the Pay button above to pay for your booking.",
        on_text=on_payment_text,
    ),
}

FLOW: Flow[FlowDeps, Conversation] = Flow(
    name="booking",
    prefix="book:",
    states=tuple(STATES.values()),
    extends=(
        # A result's number starts the booking (detail and first question together).
        Extension(search_flow.RESULTS, {"pick": on_pick_and_book}),
        Extension(search_flow.DETAIL, {"book": on_book}),
    ),
)
