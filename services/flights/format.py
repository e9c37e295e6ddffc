"""Itineraries as Telegram HTML: a line per result, a detail view, and the results header.

Times are local to each airport, with the airport code beside them; a landing on a later local
day says "+1". Everything that comes from outside (airline and city names, codes from a
provider) passes through ``esc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from services.flights.airlines import airline_name
from services.flights.dates import format_day, format_duration
from services.flights.places import PlaceIndex
from services.messages import esc
from services.models import (
    FareRules,
    Itinerary,
    Passengers,
    SearchQuery,
    Segment,
    today_anywhere,
)
from services.money import Money

DEMO_NOTE = "Demo fare: generated for trying the bot, not a real flight."


def short_price(price: Money) -> str:
    """'€89' for whole amounts, '€89.50' otherwise: prices in a list stay short."""
    text = price.format()
    if price.exponent and price.amount % (10**price.exponent) == 0:
        return text.rsplit(".", 1)[0]
    return text


def day_offset(departure: datetime, arrival: datetime) -> str:
    """'+1' when the arrival's local date is a day after the departure's ('−1' before)."""
    days = (arrival.date() - departure.date()).days
    if days == 0:
        return ""
    return f"+{days}" if days > 0 else f"−{-days}"


def stops_text(segments: Sequence[Segment]) -> str:
    """'direct', '1 stop (FRA)', '2 stops (FRA, DXB)'."""
    via = [s.destination for s in segments[:-1]]
    if not via:
        return "direct"
    noun = "stop" if len(via) == 1 else "stops"
    return f"{len(via)} {noun} ({', '.join(via)})"


def carriers_text(segments: Sequence[Segment]) -> str:
    names = list(dict.fromkeys(airline_name(s.carrier) for s in segments))
    if len(names) > 2:
        return f"{names[0]} + {len(names) - 1} more"
    return " + ".join(names)


def _direction_line(segments: Sequence[Segment]) -> str:
    first, last = segments[0], segments[-1]
    offset = day_offset(first.departure, last.arrival)
    arrival = f"{last.arrival:%H:%M} {esc(last.destination)}" + (f" {offset}" if offset else "")
    duration = format_duration(last.arrival - first.departure)
    return (
        f"{first.departure:%H:%M} {esc(first.origin)} → {arrival}"
        f" · {duration} · {esc(stops_text(segments))}"
    )


def itinerary_line(itinerary: Itinerary, *, number: int | None = None) -> str:
    """Two or three lines: price and airline, then each direction with times and stops."""
    prefix = f"{number}. " if number is not None else ""
    lines = [
        f"<b>{prefix}{esc(short_price(itinerary.price))}</b> · "
        f"{esc(carriers_text(itinerary.segments))}",
        f"   {_direction_line(itinerary.outbound)}",
    ]
    if itinerary.inbound:
        lines.append(f"   ↩ {_direction_line(itinerary.inbound)}")
    return "\n".join(lines)


def _flight_code(segment: Segment) -> str:
    number = segment.flight_number
    if number.upper().startswith(segment.carrier.upper()):
        number = number[len(segment.carrier) :]
    return f"{segment.carrier} {number}".strip()


def _direction_detail(
    title: str, segments: Sequence[Segment], places: PlaceIndex, today: date
) -> list[str]:
    first, last = segments[0], segments[-1]
    lines = [f"<b>{title}</b> · {esc(format_day(first.departure.date(), today=today))}"]
    for index, segment in enumerate(segments):
        if index:
            before = segments[index - 1]
            layover = format_duration(segment.departure - before.arrival)
            city = places.city_name(segment.origin)
            if before.destination != segment.origin:
                lines.append(
                    f"   ⏱ {layover} in {esc(city)}: change airport "
                    f"{esc(before.destination)} → {esc(segment.origin)}"
                )
            else:
                lines.append(f"   ⏱ {layover} layover in {esc(city)} ({esc(segment.origin)})")
        offset = day_offset(segment.departure, segment.arrival)
        lines.append(
            f"✈ {esc(_flight_code(segment))} · {esc(airline_name(segment.carrier))}\n"
            f"   {segment.departure:%H:%M} {esc(segment.origin)} "
            f"{esc(places.city_name(segment.origin))} → {segment.arrival:%H:%M} "
            f"{esc(segment.destination)} {esc(places.city_name(segment.destination))}"
            + (f" {offset}" if offset else "")
            + f" · {format_duration(segment.duration)}"
        )
    total = format_duration(last.arrival - first.departure)
    lines.append(
        f"Arrives {esc(format_day(last.arrival.date(), today=today))} "
        f"{last.arrival:%H:%M} local time · {total} in all · {esc(stops_text(segments))}"
    )
    return lines


_CATEGORY_LABELS = {"adult": "Adult", "child": "Child", "infant": "Infant"}


def price_lines(itinerary: Itinerary, passengers: Passengers | None = None) -> list[str]:
    """The total, split per adult/child/infant and with the taxes included where the provider
    gives them; otherwise the total and whom it is for."""
    lines: list[str] = []
    for line in itinerary.price_lines:
        label = _CATEGORY_LABELS.get(line.category.value, line.category.value)
        if line.count == 1:
            lines.append(f"{label}: {esc(line.each.format())}")
        else:
            lines.append(
                f"{label} × {line.count}: {esc(line.each.format())} each = "
                f"{esc(line.total.format())}"
            )
    if itinerary.taxes is not None and itinerary.taxes.amount > 0:
        lines.append(f"Taxes and fees, included: {esc(itinerary.taxes.format())}")
    who = f" for {esc(passengers.describe())}" if passengers is not None else ""
    lines.append(f"<b>Total {esc(itinerary.price.format())}</b>{who}")
    return lines


def _fee(fee: Money | None, per: str = "per traveller") -> str:
    if fee is None:
        return ", fee set by the airline"
    if fee.amount == 0:
        return ", free"
    return f", fee {esc(fee.format())} {per}"


def _stated_rules(itinerary: Itinerary) -> tuple[FareRules | None, str]:
    """The fare's rules and what their fees are counted on. Duffel gives its offer-wide
    ``conditions`` (a penalty for the whole booking) rather than per-traveller ``rules``."""
    if itinerary.rules is not None or itinerary.conditions is None:
        return itinerary.rules, "per traveller"
    stated = itinerary.conditions
    rules = FareRules(
        refundable=stated.refundable,
        refund_fee=stated.refund_penalty,
        changeable=stated.changeable,
        change_fee=stated.change_penalty,
    )
    return rules, "for the booking"


def rules_lines(itinerary: Itinerary, *, bags: bool = True) -> list[str]:
    """Changes, refunds and bags as the fare states them; what is not stated is said so."""
    rules, per = _stated_rules(itinerary)
    lines: list[str] = []
    if rules is None or rules.changeable is None:
        lines.append("Changes: ask the airline (the fare does not say)")
    elif rules.changeable:
        lines.append("Changes: allowed" + _fee(rules.change_fee, per))
    else:
        lines.append("Changes: not allowed")
    if rules is None or rules.refundable is None:
        lines.append("Refund: ask the airline (the fare does not say)")
    elif rules.refundable:
        lines.append("Refund: refundable" + _fee(rules.refund_fee, per))
    else:
        lines.append("Refund: not refundable")
    if bags:
        included = _baggage_line(itinerary)
        lines.append(included or "🧳 Bags: as the airline's fare includes (not stated)")
    return lines


def price_basis(passengers: Passengers) -> str:
    """Whether a listed price is one traveller's or the party's."""
    if passengers.total == 1:
        return "Prices are per person, taxes included."
    return f"Prices are the total for {esc(passengers.describe())}, taxes included."


def _baggage_line(itinerary: Itinerary) -> str | None:
    baggage = itinerary.baggage
    if baggage is None:
        return None
    parts: list[str] = []
    if baggage.hand_kg:
        parts.append(f"cabin bag {baggage.hand_kg} kg")
    if baggage.hold_kg:
        parts.append(f"checked bag {baggage.hold_kg} kg")
    if baggage.first_hold_bag is not None:
        if baggage.first_hold_bag.amount == 0:
            parts.append("first checked bag included")
        elif not baggage.hold_kg:
            parts.append(f"checked bag from {short_price(baggage.first_hold_bag)}")
        else:
            parts.append(f"first checked bag {short_price(baggage.first_hold_bag)}")
    if not parts:
        return None
    return "🧳 " + esc(" · ".join(parts).capitalize())


def itinerary_detail(
    itinerary: Itinerary,
    *,
    passengers: Passengers | None = None,
    places: PlaceIndex | None = None,
    today: date | None = None,
) -> str:
    """Every segment with flight numbers and local times, layovers, baggage and the total."""
    index = places or PlaceIndex.default()
    day = today or today_anywhere()
    outbound, inbound = itinerary.outbound, itinerary.inbound
    origin = index.city_name(outbound[0].origin)
    destination = index.city_name(outbound[-1].destination)
    arrow = "⇄" if inbound else "→"
    lines = [f"<b>{esc(origin)} {arrow} {esc(destination)}</b>"]
    lines += _direction_detail("Outbound", outbound, index, day)
    if inbound:
        lines.append("")
        lines += _direction_detail("Return", inbound, index, day)
    lines.append("")
    baggage = _baggage_line(itinerary)
    if baggage:
        lines.append(baggage)
    needed = passengers.seats if passengers is not None else 1
    if itinerary.seats_left is not None and needed <= itinerary.seats_left <= 5:
        seats = "seat" if itinerary.seats_left == 1 else "seats"
        lines.append(f"Only {itinerary.seats_left} {seats} left at this price")
    lines += rules_lines(itinerary, bags=False)
    lines += price_lines(itinerary, passengers)
    if itinerary.is_demo:
        lines.append(f"<i>{esc(DEMO_NOTE)}</i>")
    return "\n".join(lines)


def results_header(
    query: SearchQuery, *, demo: bool, count: int | None = None, today: date | None = None
) -> str:
    """'LIS → TYO, Fri 12 Mar, 1 adult · demo fares'."""
    day = today or today_anywhere()
    arrow = "⇄" if query.return_date else "→"
    when = format_day(query.departure, today=day)
    if query.return_date:
        when += f" – {format_day(query.return_date, today=day)}"
    parts = [
        f"{query.origin.code} {arrow} {query.destination.code}, {when}, "
        f"{query.passengers.describe()}"
    ]
    if query.cabin.value != "M":
        parts.append(query.cabin.label)
    if count is not None:
        parts.append(f"{count} flight" + ("" if count == 1 else "s"))
    if demo:
        parts.append("demo fares")
    return f"<b>{esc(parts[0])}</b>" + "".join(f" · {esc(p)}" for p in parts[1:])


def no_results_text(
    query: SearchQuery, *, direct_only: bool = False, today: date | None = None
) -> str:
    """What to say when nothing (or nothing non-stop) flies that day."""
    day = today or today_anywhere()
    route = f"{query.origin.name} → {query.destination.name}"
    when = format_day(query.departure, today=day)
    if direct_only:
        return f"No non-stop flights {esc(route)} on {esc(when)}. Show flights with stops?"
    return f"No flights found {esc(route)} on {esc(when)}. Try another date or a nearby airport."
