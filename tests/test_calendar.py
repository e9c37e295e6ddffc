"""The inline calendar: a month grid with past and out-of-range days inert, and paging."""

from __future__ import annotations

from datetime import date

from conversations.calendar import (
    NOOP,
    calendar_keyboard,
    parse_day_arg,
    parse_month_arg,
)
from services.messages import Button

TODAY = date(2026, 11, 25)
LAST = date(2027, 10, 21)


def _days(rows: tuple[tuple[Button, ...], ...]) -> list[Button]:
    return [b for row in rows[2:] for b in row if b.action == "day"]


def _nav(rows: tuple[tuple[Button, ...], ...]) -> list[Button]:
    return [b for b in rows[-1] if b.action == "cal"]


def test_the_current_month_offers_today_onwards_and_disables_the_past() -> None:
    rows = calendar_keyboard(TODAY, today=TODAY, min_day=TODAY, max_day=LAST)
    assert rows[0][0].label == "November 2026"
    assert [b.label for b in rows[1]] == ["Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"]
    days = _days(rows)
    assert [parse_day_arg(b.arg) for b in days] == [date(2026, 11, d) for d in range(25, 31)]
    assert days[0].label == "•25"  # today is marked
    labels = [b.label for row in rows[2:-1] for b in row]
    assert labels.count("·") == 24  # 1..24 November are shown but inert
    inert = [b for row in rows[2:-1] for b in row if b.label in ("·", " ")]
    assert all(b.action == NOOP for b in inert)


def test_weeks_start_on_monday_and_days_sit_under_their_weekday() -> None:
    rows = calendar_keyboard(date(2027, 3, 1), today=TODAY, min_day=TODAY, max_day=LAST)
    first_week = rows[2]
    assert first_week[0].arg == "20270301"  # 1 March 2027 is a Monday
    week_with_14 = next(row for row in rows[2:] if any(b.arg == "20270314" for b in row))
    assert week_with_14[6].arg == "20270314"  # a Sunday, in the last column


def test_the_first_month_has_no_way_back_and_the_last_no_way_forward() -> None:
    first = calendar_keyboard(TODAY, today=TODAY, min_day=TODAY, max_day=LAST)
    assert [b.label for b in _nav(first)] == ["Dec ›"]
    assert _nav(first)[0].arg == "202612"

    middle = calendar_keyboard(date(2027, 3, 1), today=TODAY, min_day=TODAY, max_day=LAST)
    assert [(b.label, b.arg) for b in _nav(middle)] == [("‹ Feb", "202702"), ("Apr ›", "202704")]

    last = calendar_keyboard(LAST, today=TODAY, min_day=TODAY, max_day=LAST)
    assert [b.label for b in _nav(last)] == ["‹ Sep"]
    assert max(parse_day_arg(b.arg) for b in _days(last)) == LAST  # type: ignore[type-var]


def test_a_month_outside_the_range_is_clamped() -> None:
    before = calendar_keyboard(date(2020, 1, 1), today=TODAY, min_day=TODAY, max_day=LAST)
    assert before[0][0].label == "November 2026"
    after = calendar_keyboard(date(2030, 1, 1), today=TODAY, min_day=TODAY, max_day=LAST)
    assert after[0][0].label == "October 2027"


def test_a_return_calendar_starts_at_the_departure_day() -> None:
    departure = date(2027, 3, 12)
    rows = calendar_keyboard(departure, today=TODAY, min_day=departure, max_day=LAST)
    assert parse_day_arg(_days(rows)[0].arg) == departure
    assert [b.label for b in _nav(rows)] == ["Apr ›"]


def test_custom_actions_and_telegram_limits() -> None:
    rows = calendar_keyboard(
        date(2027, 5, 1), today=TODAY, min_day=TODAY, max_day=LAST, action="ret", nav_action="rc"
    )
    buttons = [b for row in rows for b in row]
    assert {b.action for b in buttons} == {"ret", "rc", NOOP}
    assert all(len(row) <= 8 for row in rows)
    assert len(buttons) <= 100
    assert all(len(b.arg.encode()) <= 8 for b in buttons)
    assert all(b.label for b in buttons)


def test_callback_args_are_parsed_strictly() -> None:
    assert parse_day_arg("20270314") == date(2027, 3, 14)
    assert parse_day_arg("20270230") is None
    assert parse_day_arg("2027-03-14") is None
    assert parse_day_arg("") is None
    assert parse_month_arg("202703") == date(2027, 3, 1)
    assert parse_month_arg("202713") is None
    assert parse_month_arg("abc") is None
