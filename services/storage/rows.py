"""Rows ↔ models, shared by the SQLite and Supabase adapters.

Both databases hold the same columns; JSON columns arrive as text from SQLite and as decoded
values from PostgREST, timestamps as ISO strings from both. Keeping the mapping here means a
booking reads back identically whichever adapter stored it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final

from pydantic import ConfigDict, TypeAdapter

from services.models import (
    AuditEntry,
    Booking,
    BookingStatus,
    Broadcast,
    DeliveryStatus,
    Fulfilment,
    NewBooking,
    Profile,
    RouteCount,
    Stats,
    Traveller,
)
from services.money import Money
from services.storage.base import (
    DELIVERY_OUTCOMES,
    REFERENCE_ALPHABET,
    REMINDER_KINDS,
    REMINDER_OUTCOMES,
    RETURN_REMINDER_KINDS,
    SEARCH_STAGES,
)
from services.storage.sealing import SEALED, Sealer

TOP_ROUTES = 5


# What an erased traveller keeps: passenger category, gender and nationality (fare rules and
# statistics). Without names, birth date, document and contacts nobody can be identified.
# The ciphertext goes too: its key would otherwise still open the erased details.
ERASED_TRAVELLER_FIELDS: Final[Mapping[str, Any]] = {
    SEALED: None,
    "first_name": "Erased",
    "last_name": "Erased",
    "birth_date": "1900-01-01",
    "passport_number": "",
    "passport_expiry": "1900-01-01",
    "email": None,
    "phone": None,
}

_TRAVELLERS = TypeAdapter(tuple[Traveller, ...], config=ConfigDict(hide_input_in_errors=True))
_REFERENCE = re.compile(f"^[{REFERENCE_ALPHABET}]{{4,12}}$")
_USERNAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def json_value(value: Any) -> Any:
    """A JSON column as a Python value, whether the driver decoded it or not."""
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


def travellers_to_json(
    travellers: tuple[Traveller, ...], *, sealer: Sealer
) -> list[dict[str, Any]]:
    """The stored form: documents and contacts sealed (services/storage/sealing.py)."""
    dumped: list[dict[str, Any]] = _TRAVELLERS.dump_python(travellers, mode="json")
    for item in dumped:
        item.pop("passport_masked", None)  # derived; never stored
    return [sealer.seal(item) for item in dumped]


def travellers_from_json(value: Any, *, sealer: Sealer) -> tuple[Traveller, ...]:
    stored = json_value(value)
    if isinstance(stored, list):
        stored = [sealer.open(t) if isinstance(t, Mapping) else t for t in stored]
    return _TRAVELLERS.validate_python(stored)


def erase_traveller(traveller: Mapping[str, Any]) -> dict[str, Any]:
    return {**traveller, **ERASED_TRAVELLER_FIELDS}


def normalise_reference(reference: str) -> str | None:
    """The stored form of a reference a person typed, or None if it cannot be one."""
    cleaned = reference.strip().lstrip("#").upper()
    return cleaned if _REFERENCE.match(cleaned) else None


def normalise_username(username: str) -> str | None:
    """A Telegram username without '@', or None if it cannot be one."""
    cleaned = username.strip().removeprefix("@")
    return cleaned if _USERNAME.match(cleaned) else None


def normalise_booking_id(value: str) -> str | None:
    """The canonical (lower-case, hyphenated) form of a booking id, or None if it is not one."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def new_booking_id() -> str:
    return str(uuid.uuid4())


def aware(moment: datetime) -> datetime:
    """``moment`` in UTC; naive datetimes are a programming error, never guessed at."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return moment.astimezone(UTC)


def booking_row(
    booking: NewBooking, *, booking_id: str, reference: str, sealer: Sealer
) -> dict[str, Any]:
    """The insertable columns of a new booking, as JSON-compatible values (no timestamps)."""
    if booking.amount.amount < 0:
        raise ValueError("a booking's amount cannot be negative")
    return {
        "id": booking_id,
        "reference": reference,
        "user_id": booking.user_id,
        "itinerary": booking.itinerary.model_dump(mode="json"),
        "origin": booking.origin,
        "destination": booking.destination,
        "departure_date": booking.departure_date.isoformat(),
        "return_date": booking.return_date.isoformat() if booking.return_date else None,
        # The outbound departure as an instant: what the reminders' due selection ranges over.
        "departs_at": aware(booking.itinerary.departure).isoformat(),
        # The flight home's, likewise (None for a one-way trip): the return reminders'.
        "returns_at": (
            aware(returns).isoformat()
            if (returns := booking.itinerary.return_departure) is not None
            else None
        ),
        "travellers": travellers_to_json(booking.travellers, sealer=sealer),
        "amount_minor": booking.amount.amount,
        "currency": booking.amount.currency,
        "status": booking.status.value,
        "payment_deadline": (
            aware(booking.payment_deadline).isoformat() if booking.payment_deadline else None
        ),
    }


def booking_from_row(row: Mapping[str, Any], *, sealer: Sealer) -> Booking:
    return Booking.model_validate(
        {
            "id": str(row["id"]),
            "reference": row["reference"],
            "user_id": row["user_id"],
            "itinerary": json_value(row["itinerary"]),
            "travellers": travellers_from_json(row["travellers"], sealer=sealer),
            "amount": Money(amount=int(row["amount_minor"]), currency=row["currency"].strip()),
            "status": row["status"],
            "checkout_session_id": row["checkout_session_id"],
            "payment_intent_id": row["payment_intent_id"],
            "payment_deadline": row["payment_deadline"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "refunded_minor": int(row.get("refunded_minor") or 0),
            "refund_pending_minor": int(row.get("refund_pending_minor") or 0),
            "checkout_renewals": int(row.get("checkout_renewals") or 0),
            "erase_after": row.get("erase_after"),
            "provider_order_id": row.get("provider_order_id"),
            "provider_order_token": row.get("provider_order_token"),
            "airline_reference": row.get("airline_reference"),
            "ticket_numbers": tuple(json_value(row.get("ticket_numbers") or "[]")),
        }
    )


def provider_order_update(
    *,
    order_id: str | None,
    token: str | None,
    airline_reference: str | None,
    ticket_numbers: Sequence[str] | None,
) -> dict[str, Any]:
    """The provider-order columns to write: only those given (None leaves a column as it is)."""
    update: dict[str, Any] = {}
    if order_id is not None:
        update["provider_order_id"] = order_id
    if token is not None:
        update["provider_order_token"] = token
    if airline_reference is not None:
        update["airline_reference"] = airline_reference
    if ticket_numbers is not None:
        update["ticket_numbers"] = [str(number) for number in ticket_numbers]
    return update


def check_reminder_kind(kind: str) -> None:
    if kind not in REMINDER_KINDS:
        raise ValueError(f"no reminder kind {kind!r}; kinds: {', '.join(sorted(REMINDER_KINDS))}")


def reminder_column(kind: str) -> str:
    """The bookings column a kind's due selection ranges over (each has its own index)."""
    check_reminder_kind(kind)
    return "returns_at" if kind in RETURN_REMINDER_KINDS else "departs_at"


def check_reminder_outcome(outcome: str) -> None:
    if outcome not in REMINDER_OUTCOMES:
        raise ValueError(f"a reminder cannot end as {outcome!r}")


def profile_from_row(row: Mapping[str, Any], *, sealer: Sealer) -> Profile:
    return Profile(
        user_id=row["id"],
        username=row["username"],
        first_name=row["first_name"],
        language=row["language"],
        blocked=bool(row["blocked"]),
        bot_blocked=bool(row["bot_blocked"]),
        reminders=bool(row.get("reminders", True)),
        saved_travellers=travellers_from_json(row["saved_travellers"], sealer=sealer),
        created_at=row["created_at"],
    )


def audit_from_row(row: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(
        admin_id=row["admin_id"],
        action=row["action"],
        target=row["target"],
        details=json_value(row["details"]),
        created_at=row["created_at"],
    )


def broadcast_from_row(row: Mapping[str, Any]) -> Broadcast:
    return Broadcast.model_validate(
        {key: row[key] for key in ("id", "admin_id", "text", "status", "total")}
        | {"created_at": row["created_at"], "updated_at": row["updated_at"]}
    )


def fulfilment_from_row(row: Mapping[str, Any]) -> Fulfilment:
    return Fulfilment(
        booking_id=str(row["booking_id"]),
        provider_order=row["provider_order"],
        provider_booking_id=row["provider_booking_id"],
    )


def payment_event_from_row(row: Mapping[str, Any]) -> tuple[str, str, datetime]:
    received = row["received_at"]
    if isinstance(received, str):
        received = datetime.fromisoformat(received)
    return (row["event_id"], row["type"], received)


def stats_from_parts(
    since: datetime,
    *,
    by_status: Mapping[str, int],
    revenue: Mapping[str, int],
    searches: int,
    new_users: int,
    top_routes: Sequence[Mapping[str, Any]],
) -> Stats:
    """One ``Stats`` from the aggregates either database computed; every status is present."""
    return Stats(
        since=since,
        bookings_by_status={
            status: int(by_status.get(status.value, 0)) for status in BookingStatus
        },
        revenue=tuple(
            Money(amount=int(total), currency=currency.strip())
            for currency, total in sorted(revenue.items())
        ),
        searches=int(searches),
        new_users=int(new_users),
        top_routes=tuple(
            RouteCount(
                origin=route["origin"], destination=route["destination"], count=route["count"]
            )
            for route in top_routes
        ),
    )


def iso_date(value: date | None) -> str | None:
    return value.isoformat() if value else None


def stage_column(stage: str) -> str:
    """The timestamp column a funnel stage marks on a search."""
    if stage not in SEARCH_STAGES:
        raise ValueError(f"unknown funnel stage {stage!r}; expected one of {sorted(SEARCH_STAGES)}")
    return f"{stage}_at"


def check_outcome(outcome: DeliveryStatus) -> None:
    if outcome not in DELIVERY_OUTCOMES:
        raise ValueError(
            f"{outcome!r} is not how a delivery ends; expected sent, failed or bot_blocked"
        )


def event_booking_id(booking_id: str | None) -> str | None:
    """A payment event's booking id, canonical; a malformed one is the caller's bug."""
    if booking_id is None:
        return None
    canonical = normalise_booking_id(booking_id)
    if canonical is None:
        raise ValueError(f"{booking_id!r} is not a booking id")
    return canonical
