"""Travel days for tests, computed from today so the suite keeps working as the calendar moves."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


def next_winter_day(today: date) -> date:
    """A December to February day at least two weeks ahead: Lisbon on UTC+0 and Berlin on
    UTC+1 (no summer time), and within any provider's horizon whatever today is."""
    day = today + timedelta(days=14)
    while day.month not in (12, 1, 2) or day.day > 20:
        day += timedelta(days=1)
    return day


class Clock:
    """A clock a test sets and moves: services and flows take ``clock=`` so that what "today"
    means never depends on when the suite runs."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, span: timedelta) -> None:
        self.now += span


def coming_weekday_at(
    weekday: int, hour: int, minute: int = 0, *, weeks_ahead: int = 1
) -> datetime:
    """A UTC instant on ``weekday`` (0 = Monday) at ``hour:minute``, at least ``weeks_ahead``
    weeks from now: a fixed shape of day (a Wednesday morning in UTC) that is still in the
    future, so whatever checks use the real clock keep accepting its dates."""
    start = datetime.now(UTC).date() + timedelta(weeks=weeks_ahead)
    day = start + timedelta(days=(weekday - start.weekday()) % 7)
    return datetime.combine(day, time(hour, minute), UTC)
