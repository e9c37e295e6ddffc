"""Travel days for tests, computed from today so the suite keeps working as the calendar moves."""

from __future__ import annotations

from datetime import date, timedelta


def next_winter_day(today: date) -> date:
    """A December to February day at least two weeks ahead: Lisbon on UTC+0 and Berlin on
    UTC+1 (no summer time), and within any provider's horizon whatever today is."""
    day = today + timedelta(days=14)
    while day.month not in (12, 1, 2) or day.day > 20:
        day += timedelta(days=1)
    return day
