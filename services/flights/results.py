"""Search results as a traveller browses them: sorted, filtered to non-stop, in pages of five.

Pure functions over itineraries; the flow keeps only the choices (sort, direct, page) in its
state and recomputes the page, so nothing positional is stored.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.models import Itinerary

PAGE_SIZE = 5


class SortKey(enum.StrEnum):
    """Stable names (stored in conversation state and callback data)."""

    PRICE = "price"
    DURATION = "duration"
    DEPARTURE = "departure"

    @property
    def label(self) -> str:
        return {"price": "Cheapest", "duration": "Fastest", "departure": "Earliest"}[self.value]

    @classmethod
    def parse(cls, value: str | None) -> SortKey:
        """The sort a button or stored state names; cheapest for anything unknown."""
        try:
            return cls(value or cls.PRICE)
        except ValueError:
            return cls.PRICE


def _price(itinerary: Itinerary) -> tuple[str, int]:
    return (itinerary.price.currency, itinerary.price.amount)


def sort_itineraries(
    itineraries: Iterable[Itinerary], key: SortKey = SortKey.PRICE
) -> list[Itinerary]:
    """Cheapest, fastest or earliest first; ties broken by the other two, then by id."""
    items = list(itineraries)
    if key is SortKey.DURATION:
        return sorted(
            items, key=lambda i: (i.total_duration, _price(i), i.departure.timestamp(), i.id)
        )
    if key is SortKey.DEPARTURE:
        return sorted(
            items, key=lambda i: (i.departure.timestamp(), _price(i), i.total_duration, i.id)
        )
    return sorted(items, key=lambda i: (_price(i), i.total_duration, i.departure.timestamp(), i.id))


def direct_only(itineraries: Iterable[Itinerary]) -> list[Itinerary]:
    """Itineraries with no stop in any direction."""
    return [i for i in itineraries if i.stops == 0]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of results. ``number`` counts from 0; ``start`` is the overall index of the
    first item, so lines can be numbered 1..n across pages."""

    items: tuple[Itinerary, ...]
    number: int
    pages: int
    total: int
    start: int

    @property
    def has_previous(self) -> bool:
        return self.number > 0

    @property
    def has_next(self) -> bool:
        return self.number + 1 < self.pages


def paginate(itineraries: Sequence[Itinerary], page: int, page_size: int = PAGE_SIZE) -> Page:
    """The requested page, clamped to the pages there are (an old button cannot overrun)."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    total = len(itineraries)
    pages = max(1, -(-total // page_size))
    number = min(max(0, page), pages - 1)
    start = number * page_size
    return Page(
        items=tuple(itineraries[start : start + page_size]),
        number=number,
        pages=pages,
        total=total,
        start=start,
    )


def results_page(
    itineraries: Iterable[Itinerary],
    *,
    sort: SortKey = SortKey.PRICE,
    direct: bool = False,
    page: int = 0,
    page_size: int = PAGE_SIZE,
) -> Page:
    """Sort, filter and page in one call: what a results message shows."""
    chosen = direct_only(itineraries) if direct else list(itineraries)
    return paginate(sort_itineraries(chosen, sort), page, page_size)
