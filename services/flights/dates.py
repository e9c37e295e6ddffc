"""Travel dates as people type them, and dates and durations as people read them.

``dateparser`` reads the words ("14 March", "tomorrow", "in 3 days"); numbers and weekdays are
read here first, because there the library guesses in ways a traveller would not: "03/14"
becomes the year 2114, "32/13" a date in 2032, and "next friday" the coming Friday rather than
the Friday of next week.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dateparser

from services.models import today_anywhere

MAX_DATE_TEXT = 40
_EXAMPLES = "14 March, 2027-03-14, 14/03, next friday or tomorrow"

_WEEKDAYS = {
    "mon": 0, "monday": 0, "tue": 1, "tues": 1, "tuesday": 1, "wed": 2, "weds": 2,
    "wednesday": 2, "thu": 3, "thur": 3, "thurs": 3, "thursday": 3, "fri": 4, "friday": 4,
    "sat": 5, "saturday": 5, "sun": 6, "sunday": 6,
}  # fmt: skip
_MONTHS = {
    name.lower(): number
    for number in range(1, 13)
    for name in (calendar.month_name[number], calendar.month_abbr[number])
} | {"sept": 9}

_ISO = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")
_DMY = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})(?:[/.\-](\d{2}|\d{4}))?\.?$")
_DAY_ONLY = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)?$")
_WEEKDAY = re.compile(r"^(?:(this|next|coming|on)\s+)?([a-z]+)$")
_VAGUE = re.compile(r"^(?:(?:this|next|coming)\s+)?(?:week|weekend|month|year)$")
_MONTH_ONLY = re.compile(r"^(?:in |next |this )?([a-z]+)\.?(?: (\d{4}))?$")
_RELATIVE_DAYS = re.compile(r"^in\s+(\d{1,3})\s+(day|days|week|weeks)$")


# A traveller's zone before they name an origin, from their Telegram language (the place most
# of its speakers live). Only "today" and "tomorrow" and the year shown in dates depend on it.
LANGUAGE_ZONES = {
    "en": "Europe/London", "pt": "Europe/Lisbon", "es": "Europe/Madrid", "fr": "Europe/Paris",
    "de": "Europe/Berlin", "it": "Europe/Rome", "nl": "Europe/Amsterdam", "pl": "Europe/Warsaw",
    "uk": "Europe/Kyiv", "ru": "Europe/Moscow", "tr": "Europe/Istanbul", "el": "Europe/Athens",
    "sv": "Europe/Stockholm", "da": "Europe/Copenhagen", "fi": "Europe/Helsinki",
    "cs": "Europe/Prague", "ro": "Europe/Bucharest", "hu": "Europe/Budapest",
    "ar": "Asia/Riyadh", "he": "Asia/Jerusalem", "fa": "Asia/Tehran", "hi": "Asia/Kolkata",
    "th": "Asia/Bangkok", "vi": "Asia/Ho_Chi_Minh", "id": "Asia/Jakarta", "ms": "Asia/Kuala_Lumpur",
    "zh": "Asia/Shanghai", "ja": "Asia/Tokyo", "ko": "Asia/Seoul", "pt-br": "America/Sao_Paulo",
    "en-us": "America/New_York",
}  # fmt: skip


def zone_for_language(language: str | None) -> str | None:
    """The IANA zone guessed from a Telegram language code ('pt-br', 'ja'), or None."""
    if not language:
        return None
    code = language.strip().lower().replace("_", "-")
    return LANGUAGE_ZONES.get(code) or LANGUAGE_ZONES.get(code.split("-")[0])


def local_today(zone: str | None, now: datetime) -> date:
    """The date at ``now`` in ``zone`` (an IANA name); without a zone, the earliest date still
    current somewhere on Earth, so nobody is told their today has gone."""
    if zone:
        try:
            return now.astimezone(ZoneInfo(zone)).date()
        except (
            ZoneInfoNotFoundError,
            ValueError,
        ):  # an unknown zone name: fall back, never fail a turn
            pass
    return today_anywhere(now)


class DateInputError(ValueError):
    """A date we cannot accept, with a message written for the traveller.

    ``month`` suggests which month the calendar could open on (e.g. the traveller typed only
    "March").
    """

    def __init__(self, message: str, *, month: date | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.month = month


def parse_travel_date(
    text: str,
    *,
    today: date,
    not_before: date | None = None,
    horizon_days: int,
) -> date:
    """Read a departure or return date typed by a traveller.

    ``today`` is the first bookable day; ``not_before`` the departure when reading a return
    date; ``horizon_days`` how far ahead the provider sells. Raises ``DateInputError``.
    """
    cleaned = " ".join(str(text).strip().lower().replace(",", " ").split())
    if not cleaned:
        raise DateInputError(f"Type a date, e.g. {_EXAMPLES}.")
    if len(cleaned) > MAX_DATE_TEXT:
        raise DateInputError(f"That is too long for a date. Try e.g. {_EXAMPLES}.")
    cleaned = re.sub(r"^(?:on|the|on the)\s+", "", cleaned)
    day = _read(cleaned, today)
    last = today + timedelta(days=horizon_days)
    if day > last and not re.search(r"\d{4}|\b\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2}\b", cleaned):
        # "24/11" on 25 Nov means the day that just went, not the one a year ahead.
        year_earlier = _safe_date(day.year - 1, day.month, day.day)
        if year_earlier is not None and year_earlier < today:
            day = year_earlier
    return check_travel_date(day, today=today, not_before=not_before, horizon_days=horizon_days)


def travel_date_readings(
    text: str,
    *,
    today: date,
    not_before: date | None = None,
    horizon_days: int,
) -> tuple[date, ...]:
    """Both bookable days a numeric date could mean when day and month could swap ("03/04":
    3 April or 4 March), day-first reading first; () when it means one day or none, so
    ``parse_travel_date`` decides. The traveller is then asked rather than guessed for."""
    cleaned = " ".join(str(text).strip().lower().split())
    cleaned = re.sub(r"^(?:on|the|on the)\s+", "", cleaned)
    match = _DMY.match(cleaned)
    if not match or len(cleaned) > MAX_DATE_TEXT:
        return ()
    first, second = int(match[1]), int(match[2])
    if first == second or not (1 <= first <= 12 and 1 <= second <= 12):
        return ()
    readings: list[date] = []
    for day, month in ((first, second), (second, first)):
        typed = f"{day}/{month}" + (f"/{match[3]}" if match[3] else "")
        try:
            found = parse_travel_date(
                typed, today=today, not_before=not_before, horizon_days=horizon_days
            )
        except DateInputError:
            continue
        readings.append(found)
    return tuple(readings) if len(readings) == 2 else ()


def check_travel_date(
    day: date, *, today: date, not_before: date | None = None, horizon_days: int
) -> date:
    """Refuse a past day, one beyond the horizon, or a return before the departure."""
    last = today + timedelta(days=horizon_days)
    if day < today:
        raise DateInputError(
            f"That date has passed: pick a day from {format_day(today, today=today)}.",
            month=today.replace(day=1),
        )
    if not_before is not None and day < not_before:
        raise DateInputError(
            "The return can't be before the departure: pick a day from "
            f"{format_day(not_before, today=today)}.",
            month=not_before.replace(day=1),
        )
    if day > last:
        raise DateInputError(
            f"Flights can be booked up to {format_day(last, today=today)}: pick an earlier day.",
            month=last.replace(day=1),
        )
    return day


def _read(text: str, today: date) -> date:
    for reader in (_read_numeric, _read_weekday, _read_relative):
        found = reader(text, today)
        if found is not None:
            return found
    if _VAGUE.match(text):
        raise DateInputError(f"Which day exactly? Type e.g. {_EXAMPLES}.")
    month_only = _MONTH_ONLY.match(text)
    month = _MONTHS.get(month_only[1]) if month_only else None
    if month_only and month is not None:
        year = today.year if month >= today.month else today.year + 1
        if month_only[2]:
            year = int(month_only[2])
        name = calendar.month_name[month]
        raise DateInputError(
            f"Which day in {name}? Type e.g. 14 {name}, or pick a day in the calendar.",
            month=date(year, month, 1),
        )
    return _read_words(text, today)


def _read_numeric(text: str, today: date) -> date | None:
    iso = _ISO.match(text)
    if iso:
        return _make(int(iso[1]), int(iso[2]), int(iso[3]))
    dmy = _DMY.match(text)
    if dmy:
        day, month = int(dmy[1]), int(dmy[2])
        if dmy[3] is not None:
            year = int(dmy[3])
            return _make(year + 2000 if year < 100 else year, month, day)
        return _next_occurrence(today, month, day)
    only_day = _DAY_ONLY.match(text)
    if only_day:
        day = int(only_day[1])
        if not 1 <= day <= 31:
            raise _unreadable(text)
        for offset in range(3):
            year, month = divmod(today.month - 1 + offset, 12)
            candidate = _safe_date(today.year + year, month + 1, day)
            if candidate is not None and candidate >= today:
                return candidate
        raise _unreadable(text)
    return None


def _read_weekday(text: str, today: date) -> date | None:
    match = _WEEKDAY.match(text)
    if not match or match[2] not in _WEEKDAYS:
        return None
    weekday = _WEEKDAYS[match[2]]
    ahead = (weekday - today.weekday()) % 7
    if match[1] == "next":
        # The day in next week (weeks start on Monday): on a Wednesday, "next friday" is nine
        # days away, "friday" two.
        monday_next_week = today + timedelta(days=7 - today.weekday())
        return monday_next_week + timedelta(days=weekday)
    if match[1] == "this":
        return today + timedelta(days=ahead)
    return today + timedelta(days=ahead or 7)


def _read_relative(text: str, today: date) -> date | None:
    words = {"today": 0, "tonight": 0, "tomorrow": 1, "tmrw": 1, "day after tomorrow": 2}
    if text in words:
        return today + timedelta(days=words[text])
    match = _RELATIVE_DAYS.match(text)
    if match:
        count = int(match[1])
        return today + timedelta(days=count * (7 if match[2].startswith("week") else 1))
    return None


def _read_words(text: str, today: date) -> date:
    if not re.search(r"[a-z]", text) or len(re.sub(r"[^a-z]", "", text)) < 3:
        raise _unreadable(text)
    base = datetime.combine(today, time(12))
    parsed = dateparser.parse(
        text,
        languages=["en"],
        settings={
            "PREFER_DATES_FROM": "future",
            "DATE_ORDER": "DMY",
            "RELATIVE_BASE": base,
            "PREFER_DAY_OF_MONTH": "first",
            "REQUIRE_PARTS": ["day"],
            "RETURN_AS_TIMEZONE_AWARE": False,
        },
    )
    if parsed is None:
        raise _unreadable(text)
    return parsed.date()


def _next_occurrence(today: date, month: int, day: int) -> date:
    if not 1 <= month <= 12 or not 1 <= day <= 31:
        raise DateInputError(
            "I read dates day first: 14/03 is 14 March. "
            f"That one doesn't exist; try e.g. {_EXAMPLES}."
        )
    for year in (today.year, today.year + 1, today.year + 2, today.year + 3, today.year + 4):
        candidate = _safe_date(year, month, day)
        if candidate is not None and candidate >= today:
            return candidate
    raise DateInputError(f"There is no {day} {calendar.month_name[month]} soon.")


def _make(year: int, month: int, day: int) -> date:
    candidate = _safe_date(year, month, day)
    if candidate is None:
        if 1 <= month <= 12 and 1 <= day <= 31:
            raise DateInputError(f"There is no {day} {calendar.month_name[month]} {year}.")
        raise DateInputError(
            f"I read dates day first: 14/03/2027 is 14 March 2027. Try e.g. {_EXAMPLES}."
        )
    return candidate


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _unreadable(text: str) -> DateInputError:
    return DateInputError(f"I couldn't read that date. Type e.g. {_EXAMPLES}.")


# The bot's two ways of writing a day, used by every message, email, calendar file and payment
# page, so that a day reads the same wherever a traveller or an admin meets it.
def format_day(day: date, *, today: date | None = None, always_year: bool = False) -> str:
    """A day of travel: 'Fri 9 Apr', with the year when it is not this year (or always, for
    what is kept beyond it, like a calendar file): 'Tue 4 Jan 2028'. A datetime gives its own
    (local) day."""
    text = f"{day:%a} {day.day} {day:%b}"
    if always_year or day.year != (today or today_anywhere()).year:
        return f"{text} {day.year}"
    return text


def format_date(day: date) -> str:
    """A day of record (a birth date, a passport's expiry), always with its year and without
    the weekday, which would only be noise there: '17 May 1990'."""
    return f"{day.day} {day:%b %Y}"


def format_duration(span: timedelta) -> str:
    """'4h 35m', '2h 05m', '45m': how long a flight or a layover takes."""
    minutes = max(0, round(span.total_seconds() / 60))
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes}m"
    return f"{hours}h {minutes:02d}m"
