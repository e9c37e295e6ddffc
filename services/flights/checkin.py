"""When airlines open online check-in, and where, for the "check-in opens" reminder.

No maintained data source for this exists (no API, data set or package publishes it), so this is
a short table of well-known carriers as their own websites state the rule, kept by hand. Most
airlines open check-in 24 hours before departure, which is also what a carrier missing here
gets. Where an airline's rule was not certain, the later time is the one written: a reminder
that comes an hour late is still true ("check-in is open"), one that comes early is not.

Check-in is done with the airline of the first flight, so that is the one looked up.
"""

from __future__ import annotations

from datetime import timedelta

DEFAULT_CHECKIN_OPENS = timedelta(hours=24)

# Hours before departure at which online check-in opens, by IATA airline code.
CHECKIN_OPENS_HOURS: dict[str, int] = {
    # 48 h: the Gulf carriers and Singapore Airlines
    "EK": 48, "QR": 48, "SQ": 48,
    # 30 h: Air France-KLM
    "AF": 30, "KL": 30,
    # 24 h: most others, among them the largest in Europe and the Americas
    "BA": 24, "IB": 24, "TK": 24, "FR": 24, "AA": 24, "DL": 24, "UA": 24, "WN": 24,
    "AS": 24, "B6": 24, "AC": 24, "QF": 24,
    # 23 h: Lufthansa
    "LH": 23,
}  # fmt: skip

# The airline's own online check-in page.
CHECKIN_URLS: dict[str, str] = {
    "AF": "https://wwws.airfrance.fr/check-in",
    "KL": "https://www.klm.com/check-in",
    "BA": "https://www.britishairways.com/travel/olcilandingpageauthreq/public/en_gb",
    "LH": "https://www.lufthansa.com/de/en/online-check-in",
    "FR": "https://www.ryanair.com/gb/en/check-in",
    "EK": "https://www.emirates.com/english/manage-booking/online-check-in/",
    "AA": "https://www.aa.com/reservation/flightCheckInViewReservationsAccess.do",
    "UA": "https://www.united.com/en/us/checkin",
    "WN": "https://www.southwest.com/air/check-in/",
}


def checkin_opens(carrier: str) -> timedelta | None:
    """How long before departure the airline opens online check-in; None when not known."""
    hours = CHECKIN_OPENS_HOURS.get(carrier.upper())
    return timedelta(hours=hours) if hours is not None else None


def checkin_url(carrier: str) -> str | None:
    """The airline's online check-in page, where known."""
    return CHECKIN_URLS.get(carrier.upper())
