"""Travel dates as travellers type them, and the refusals they get. Today is Wed 25 Nov 2026."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from services.flights.dates import (
    DateInputError,
    check_travel_date,
    format_day,
    format_duration,
    parse_travel_date,
    travel_date_readings,
)

TODAY = date(2026, 11, 25)  # a Wednesday
HORIZON = 330  # the last bookable day is Thu 21 Oct 2027


def parse(text: str, *, not_before: date | None = None) -> date:
    return parse_travel_date(text, today=TODAY, not_before=not_before, horizon_days=HORIZON)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("14 March", date(2027, 3, 14)),
        ("14 Mar", date(2027, 3, 14)),
        ("14 march 2027", date(2027, 3, 14)),
        ("March 14", date(2027, 3, 14)),
        ("2027-03-14", date(2027, 3, 14)),
        ("2027/03/14", date(2027, 3, 14)),
        ("14/03", date(2027, 3, 14)),
        ("14.03.2027", date(2027, 3, 14)),
        ("14.03.27", date(2027, 3, 14)),
        ("14/3/2027", date(2027, 3, 14)),
        ("1/2", date(2027, 2, 1)),  # day first: 1 February
        ("12.12.", date(2026, 12, 12)),
        ("5th December", date(2026, 12, 5)),
        ("Sat 5 Dec", date(2026, 12, 5)),
        ("14", date(2026, 12, 14)),  # the next 14th
        ("the 14th", date(2026, 12, 14)),
        ("today", TODAY),
        ("tomorrow", date(2026, 11, 26)),
        ("Tomorrow", date(2026, 11, 26)),
        ("day after tomorrow", date(2026, 11, 27)),
        ("in 3 days", date(2026, 11, 28)),
        ("in 2 weeks", date(2026, 12, 9)),
        ("friday", date(2026, 11, 27)),  # this week's Friday
        ("fri", date(2026, 11, 27)),
        ("on friday", date(2026, 11, 27)),
        ("this friday", date(2026, 11, 27)),
        ("next friday", date(2026, 12, 4)),  # next week's Friday, not the coming one
        ("next fri", date(2026, 12, 4)),
        ("wednesday", date(2026, 12, 2)),  # a weekday named on that weekday: a week ahead
        ("next monday", date(2026, 11, 30)),
    ],
)
def test_each_date_form_is_read(typed: str, expected: date) -> None:
    assert parse(typed) == expected


def test_today_counts_as_bookable() -> None:
    assert parse("25/11") == TODAY


@pytest.mark.parametrize("typed", ["14 March 2025", "yesterday", "2026-11-24", "24/11"])
def test_a_past_date_is_refused_with_the_first_bookable_day(typed: str) -> None:
    with pytest.raises(DateInputError) as caught:
        parse(typed)
    assert caught.value.message == "That date has passed: pick a day from Wed 25 Nov."


@pytest.mark.parametrize("typed", ["1 Jan 2028", "2028-01-01", "in 400 days"])
def test_a_date_beyond_the_horizon_is_refused_with_the_last_bookable_day(typed: str) -> None:
    with pytest.raises(DateInputError) as caught:
        parse(typed)
    assert "up to Thu 21 Oct 2027" in caught.value.message
    assert caught.value.month == date(2027, 10, 1)  # the calendar can open on the last month


def test_a_return_before_the_departure_is_refused() -> None:
    departure = date(2026, 12, 4)
    with pytest.raises(DateInputError) as caught:
        parse("1 Dec", not_before=departure)
    assert caught.value.message == (
        "The return can't be before the departure: pick a day from Fri 4 Dec."
    )
    assert parse("4 Dec", not_before=departure) == departure  # same-day return is fine


@pytest.mark.parametrize("typed", ["asdf", "soon", "whenever", "", "   ", "!!!", "x" * 60])
def test_unreadable_text_says_which_forms_work(typed: str) -> None:
    with pytest.raises(DateInputError) as caught:
        parse(typed)
    message = caught.value.message
    assert "14 March" in message or "too long" in message or "Type a date" in message


@pytest.mark.parametrize("typed", ["32/13", "03/14", "13/13/2027"])
def test_impossible_numeric_dates_explain_day_first(typed: str) -> None:
    with pytest.raises(DateInputError) as caught:
        parse(typed)
    assert "day first" in caught.value.message


def test_a_day_that_does_not_exist_is_named() -> None:
    with pytest.raises(DateInputError) as caught:
        parse("29/02/2027")
    assert caught.value.message == "There is no 29 February 2027."


@pytest.mark.parametrize(("typed", "month"), [("March", 3), ("march 2027", 3), ("in March", 3)])
def test_a_month_alone_asks_for_the_day_and_points_the_calendar_there(
    typed: str, month: int
) -> None:
    with pytest.raises(DateInputError) as caught:
        parse(typed)
    assert caught.value.message.startswith("Which day in March?")
    assert caught.value.month == date(2027, month, 1)


@pytest.mark.parametrize("typed", ["next week", "next month", "this weekend"])
def test_a_vague_period_asks_which_day(typed: str) -> None:
    with pytest.raises(DateInputError) as caught:
        parse(typed)
    assert caught.value.message.startswith("Which day exactly?")


def test_check_travel_date_applies_the_same_rules_to_calendar_picks() -> None:
    assert check_travel_date(TODAY, today=TODAY, horizon_days=HORIZON) == TODAY
    with pytest.raises(DateInputError):
        check_travel_date(TODAY - timedelta(days=1), today=TODAY, horizon_days=HORIZON)
    with pytest.raises(DateInputError):
        check_travel_date(TODAY + timedelta(days=331), today=TODAY, horizon_days=HORIZON)


def test_format_day_shows_the_year_only_when_it_is_not_this_year() -> None:
    assert format_day(date(2026, 12, 4), today=TODAY) == "Fri 4 Dec"
    assert format_day(date(2027, 4, 9), today=TODAY) == "Fri 9 Apr 2027"
    assert format_day(date(2027, 4, 9), today=date(2027, 1, 1)) == "Fri 9 Apr"


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(hours=4, minutes=35), "4h 35m"),
        (timedelta(hours=2, minutes=5), "2h 05m"),
        (timedelta(minutes=45), "45m"),
        (timedelta(hours=27, minutes=40), "27h 40m"),
        (timedelta(seconds=89), "1m"),
        (timedelta(0), "0m"),
    ],
)
def test_format_duration(span: timedelta, text: str) -> None:
    assert format_duration(span) == text


@pytest.mark.parametrize(
    ("typed", "readings"),
    [
        ("03/04", (date(2027, 4, 3), date(2027, 3, 4))),
        ("3.4.2027", (date(2027, 4, 3), date(2027, 3, 4))),
        ("12/01", (date(2027, 1, 12), date(2026, 12, 1))),
        ("14/03", ()),  # 14 can only be the day
        ("05/05", ()),  # the same either way
        ("2027-03-04", ()),  # ISO is never ambiguous
        ("01/11", ()),  # 1 November has passed and next year's is beyond the horizon
        ("11/12", ()),  # 12 November has passed: only 11 December is left
    ],
)
def test_a_day_and_month_that_could_swap_give_both_bookable_readings(
    typed: str, readings: tuple[date, ...]
) -> None:
    assert travel_date_readings(typed, today=TODAY, horizon_days=HORIZON) == readings


def test_a_reading_before_the_departure_is_not_offered_for_the_return() -> None:
    out = date(2027, 3, 10)
    assert travel_date_readings("03/04", today=TODAY, not_before=out, horizon_days=HORIZON) == ()
    early = date(2027, 2, 1)
    assert travel_date_readings("03/04", today=TODAY, not_before=early, horizon_days=HORIZON) == (
        date(2027, 4, 3),
        date(2027, 3, 4),
    )
