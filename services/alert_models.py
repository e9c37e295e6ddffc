"""Price alerts as stored: a traveller's watched search, its target and where its checks stand.

Kept apart from services/models.py so the storage port, both adapters and the alert service
share one shape without the service and the port importing each other. The search itself is
stored as JSON and read back only while its date is still ahead: ``SearchQuery`` refuses a
departure that has passed, and a finished alert must still list and erase.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from services.models import SearchQuery
from services.money import Money


class AlertStatus(enum.StrEnum):
    ACTIVE = "active"  # checked when due
    PAUSED = "paused"  # kept, not checked, until resumed
    FINISHED = "finished"  # its date passed: never checked again, not counted in the cap


class NewPriceAlert(BaseModel):
    """What "Watch this route" stores. ``target`` None: tell the traveller whenever the
    cheapest fare drops below ``lowest``, the lowest seen so far."""

    model_config = ConfigDict(frozen=True)

    user_id: int
    query: dict[str, Any]  # SearchQuery as JSON (see ``PriceAlert.search``)
    origin: str  # place codes and date, for listing without reading the query
    destination: str
    departure: date
    currency: str
    target_minor: int | None = None
    lowest_minor: int | None = None
    next_check_at: AwareDatetime

    @classmethod
    def watching(
        cls,
        user_id: int,
        query: SearchQuery,
        *,
        target: Money | None,
        lowest: Money | None,
        next_check_at: datetime,
    ) -> NewPriceAlert:
        return cls(
            user_id=user_id,
            query=query.model_dump(mode="json"),
            origin=query.origin.code,
            destination=query.destination.code,
            departure=query.departure,
            currency=query.currency,
            target_minor=target.amount if target else None,
            lowest_minor=lowest.amount if lowest else None,
            next_check_at=next_check_at,
        )


class PriceAlert(NewPriceAlert):
    """A stored alert. ``version`` grows by one with every change: each change is a
    compare-and-set on it, so of two workers checking the alert at once only one goes on."""

    id: int
    status: AlertStatus = AlertStatus.ACTIVE
    last_notified_minor: int | None = None
    version: int = 1
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @property
    def target(self) -> Money | None:
        return self._money(self.target_minor)

    @property
    def lowest(self) -> Money | None:
        return self._money(self.lowest_minor)

    @property
    def last_notified(self) -> Money | None:
        return self._money(self.last_notified_minor)

    def _money(self, amount: int | None) -> Money | None:
        return Money(amount=amount, currency=self.currency) if amount is not None else None

    def search(self) -> SearchQuery | None:
        """The watched search, or None once it can no longer be made (its date passed)."""
        try:
            return SearchQuery.model_validate(self.query)
        except ValidationError:
            return None


@dataclass(frozen=True, slots=True)
class AlertUpdate:
    """Columns one compare-and-set changes; None keeps what is stored."""

    status: AlertStatus | None = None
    next_check_at: datetime | None = None
    lowest_minor: int | None = None
    last_notified_minor: int | None = None

    def columns(self) -> dict[str, Any]:
        """The changed columns, timestamps left as datetimes for the adapter to write."""
        found: dict[str, Any] = {
            "status": self.status.value if self.status else None,
            "next_check_at": self.next_check_at,
            "lowest_minor": self.lowest_minor,
            "last_notified_minor": self.last_notified_minor,
        }
        return {column: value for column, value in found.items() if value is not None}


def alert_from_row(row: Mapping[str, Any]) -> PriceAlert:
    """A row of ``price_alerts`` from either adapter (SQLite gives the query as text)."""
    values = dict(row)
    if isinstance(values.get("query"), str):
        values["query"] = json.loads(values["query"])
    return PriceAlert.model_validate(values)
