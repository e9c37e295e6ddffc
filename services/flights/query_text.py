"""A whole search typed in one message: "Lisbon to Tokyo on 20 January", "LIS-NRT 20/01 return
3/02 2 adults".

Only splits the text into its parts (places, dates, travellers) as typed; the search flow then
resolves each part with the place index and the date reader, and asks about whatever is missing
or unclear, so a part read wrongly here costs a question, never a wrong booking.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

MAX_SEARCH_TEXT = 200

_PAX_WORDS = {
    "adult": "adults", "adults": "adults", "adt": "adults", "people": "adults",
    "persons": "adults", "person": "adults", "passengers": "adults", "passenger": "adults",
    "pax": "adults", "grown-ups": "adults", "child": "children", "children": "children",
    "kid": "children", "kids": "children", "chd": "children", "infant": "infants",
    "infants": "infants", "baby": "infants", "babies": "infants", "inf": "infants",
}  # fmt: skip
_PAX = re.compile(r"(?:\b(?:for|with|and|\+)\s+)?\b(\d{1,2})\s*(" + "|".join(_PAX_WORDS) + r")\b")
_RETURN = re.compile(r"\s*,?\s*\b(?:return(?:ing)?|back|coming back|and back)\b\s+(?:on\s+)?(.+)$")
_ROUTE = re.compile(r"^(?:from\s+)?(.+?)(?:\s+to\s+|\s*(?:->|→|⇄|–|—)\s*|\s+-\s+)(.+)$")
_CODES = re.compile(r"^([a-z]{3})-([a-z]{3})(?:\s+(.*))?$")
_MONTH_WORDS = {
    name.lower()
    for number in range(1, 13)
    for name in (calendar.month_name[number], calendar.month_abbr[number])
} | {"sept"}
_WEEKDAY_WORDS = {
    name.lower()
    for number in range(7)
    for name in (calendar.day_name[number], calendar.day_abbr[number])
}
_DATE_WORDS = {"today", "tonight", "tomorrow", "tmrw", "next", "this", "coming", "day"}
_FILLERS = re.compile(r"(?:\s+|^)(?:for|with|and|on|,)\s*$")


@dataclass(frozen=True, slots=True)
class SearchText:
    """The parts of a typed search, as typed (None: not said)."""

    origin: str | None
    destination: str | None = None
    departure: str | None = None
    return_date: str | None = None
    adults: int | None = None
    children: int | None = None
    infants: int | None = None

    @property
    def mentions_travellers(self) -> bool:
        return any(n is not None for n in (self.adults, self.children, self.infants))

    @property
    def is_whole_search(self) -> bool:
        """More than a single place: the flow should take the rest from it too."""
        return bool(self.destination or self.departure or self.mentions_travellers)


def _normalized(text: str) -> str:
    cleaned = " ".join(str(text).replace("\u00a0", " ").split())
    return cleaned.strip(" .!?").lower()


def _take_travellers(text: str) -> tuple[str, dict[str, int]]:
    counts: dict[str, int] = {}
    for match in _PAX.finditer(text):
        kind = _PAX_WORDS[match[2]]
        counts[kind] = counts.get(kind, 0) + int(match[1])
    return _PAX.sub(" ", text), counts


def _starts_a_date(tokens: list[str], index: int) -> bool:
    token = tokens[index]
    following = tokens[index + 1] if index + 1 < len(tokens) else ""
    if token[:1].isdigit() or token in _DATE_WORDS or token in _WEEKDAY_WORDS:
        return True
    if token in _MONTH_WORDS:
        return True
    if token in ("on", "the", "in"):
        return bool(following) and (
            following[:1].isdigit()
            or following in _MONTH_WORDS
            or following in _WEEKDAY_WORDS
            or following in _DATE_WORDS
            or following == "the"
        )
    return False


def split_place_and_date(text: str) -> tuple[str, str | None]:
    """'tokyo on 20 january' → ('tokyo', '20 january'); the date starts at its first word."""
    tokens = text.split()
    for index in range(1, len(tokens)):
        if _starts_a_date(tokens, index):
            when = " ".join(tokens[index:])
            when = re.sub(r"^on\s+", "", when)
            return " ".join(tokens[:index]).strip(" ,"), when.strip(" ,") or None
    return text.strip(" ,"), None


def split_return(text: str) -> tuple[str, str | None]:
    """'20 jan return 3 feb' → ('20 jan', '3 feb')."""
    cleaned = _normalized(text)
    match = _RETURN.search(cleaned)
    if not match or match.start() == 0:
        return cleaned, None
    return cleaned[: match.start()].strip(" ,"), match[1].strip(" ,")


def parse_search_text(text: str, *, with_origin: bool = True) -> SearchText:
    """Split a typed search into its parts. ``with_origin=False`` reads what follows the origin
    (the answer to "to where?": "Tokyo on 20 January 2 adults")."""
    cleaned = _normalized(text)
    if not cleaned or len(cleaned) > MAX_SEARCH_TEXT:
        return SearchText(origin=cleaned or None) if with_origin else SearchText(origin=None)
    rest, counts = _take_travellers(cleaned)
    rest = _FILLERS.sub("", " ".join(rest.split()))
    rest, back = split_return(rest)
    rest = _FILLERS.sub("", rest)
    origin: str | None = None
    if with_origin:
        codes = _CODES.match(rest)
        route = codes or _ROUTE.match(rest)
        if route is None:
            return SearchText(
                origin=rest or cleaned,
                return_date=None,
                adults=counts.get("adults"),
                children=counts.get("children"),
                infants=counts.get("infants"),
            )
        origin = route[1].strip(" ,")
        rest = " ".join(part for part in (route[2], codes[3] if codes else None) if part)
    destination, departure = split_place_and_date(rest) if rest else (None, None)
    return SearchText(
        origin=origin,
        destination=destination or None,
        departure=departure,
        return_date=back if departure else None,
        adults=counts.get("adults"),
        children=counts.get("children"),
        infants=counts.get("infants"),
    )
