"""An inline month calendar as plain button data, for picking travel dates.

Days outside ``min_day``..``max_day`` are shown but inert (action ``noop``), so the grid keeps
its shape; paging appears only towards months that have a bookable day. Callback payloads stay
tiny: a day is ``20270314``, a month ``202703``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import date, timedelta

from services.messages import Button
from services.money import Money

NOOP = "noop"
WEEKDAY_LABELS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
DISABLED_LABEL = "·"
BLANK_LABEL = " "

_DAY_ARG = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_MONTH_ARG = re.compile(r"^(\d{4})(\d{2})$")


def day_arg(day: date) -> str:
    return f"{day:%Y%m%d}"


def month_arg(month: date) -> str:
    return f"{month:%Y%m}"


def parse_day_arg(arg: str) -> date | None:
    """The day a calendar button carries; None for anything else (callback data is untrusted)."""
    match = _DAY_ARG.match(arg or "")
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def parse_month_arg(arg: str) -> date | None:
    """The first day of the month a paging button carries, or None."""
    match = _MONTH_ARG.match(arg or "")
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), 1)
    except ValueError:
        return None


def _add_months(month: date, count: int) -> date:
    year, index = divmod(month.year * 12 + month.month - 1 + count, 12)
    return date(year, index + 1, 1)


def calendar_keyboard(
    month: date,
    *,
    today: date,
    min_day: date,
    max_day: date,
    action: str = "day",
    nav_action: str = "cal",
    prices: Mapping[date, str] | None = None,
) -> tuple[tuple[Button, ...], ...]:
    """Rows: month title, weekday names, one row per week, then ‹ / › paging.

    ``month`` may be any day of the month to show; it is clamped into the bookable range.
    ``today`` is marked so the traveller sees where they are. ``prices``: a short price label
    per day (the cheapest fare), shown after the day number: "14·89".
    """
    first_month = min_day.replace(day=1)
    last_month = max_day.replace(day=1)
    shown = min(max(month.replace(day=1), first_month), max(first_month, last_month))

    rows: list[tuple[Button, ...]] = [
        (Button(label=f"{calendar.month_name[shown.month]} {shown.year}", action=NOOP),),
        tuple(Button(label=label, action=NOOP) for label in WEEKDAY_LABELS),
    ]
    for week in calendar.Calendar(firstweekday=0).monthdatescalendar(shown.year, shown.month):
        row: list[Button] = []
        for day in week:
            if day.month != shown.month:
                row.append(Button(label=BLANK_LABEL, action=NOOP))
            elif min_day <= day <= max_day:
                label = f"•{day.day}" if day == today else str(day.day)
                if prices and day in prices:
                    label += f"·{prices[day]}"
                row.append(Button(label=label, action=action, arg=day_arg(day)))
            else:
                row.append(Button(label=DISABLED_LABEL, action=NOOP))
        rows.append(tuple(row))

    previous = _add_months(shown, -1)
    following = _add_months(shown, 1)
    nav: list[Button] = []
    if previous >= first_month:
        nav.append(
            Button(
                label=f"‹ {calendar.month_abbr[previous.month]}",
                action=nav_action,
                arg=month_arg(previous),
            )
        )
    else:
        nav.append(Button(label=BLANK_LABEL, action=NOOP))
    if following <= last_month:
        nav.append(
            Button(
                label=f"{calendar.month_abbr[following.month]} ›",
                action=nav_action,
                arg=month_arg(following),
            )
        )
    else:
        nav.append(Button(label=BLANK_LABEL, action=NOOP))
    if any(button.action != NOOP for button in nav):
        rows.append(tuple(nav))
    return tuple(rows)


def month_days(month: date, *, min_day: date, max_day: date) -> list[date]:
    """The bookable days of the month the calendar shows (``month`` clamped like there)."""
    first_month, last_month = min_day.replace(day=1), max_day.replace(day=1)
    shown = min(max(month.replace(day=1), first_month), max(first_month, last_month))
    count = calendar.monthrange(shown.year, shown.month)[1]
    days = (shown + timedelta(days=n) for n in range(count))
    return [day for day in days if min_day <= day <= max_day]


def price_label(amount: Money) -> str:
    """A price small enough for a calendar button: '89', '1.2k' (the currency is said once
    above the calendar)."""
    major = int(amount.major)
    if major >= 10_000:
        return f"{major // 1000}k"
    if major >= 1000:
        return f"{major / 1000:.1f}k"
    return str(major)
