"""The storage port: everything the bot keeps beyond a conversation.

Each operation that must be atomic under many workers (a status transition, recording an event)
is one conditional statement in the adapter, so concurrent callers can never both win.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from datetime import datetime

from services.models import (
    AuditEntry,
    Booking,
    BookingStatus,
    NewBooking,
    Profile,
    SearchLogEntry,
    Stats,
    Traveller,
)

# No 0/O, 1/I/L: a reference read out over the phone or copied by hand survives.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
REFERENCE_LENGTH = 6
REFERENCE_ATTEMPTS = 8


def new_reference() -> str:
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))


class StorageUnavailableError(RuntimeError):
    """The database did not answer; the caller tells the user to try again shortly."""


class BookingNotFoundError(LookupError):
    pass


class Storage(ABC):
    """Durable storage port. Adapters: ``SQLiteStorage`` and ``SupabaseStorage``."""

    name: str

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections and make sure the schema is there."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StorageUnavailableError`` unless the database answers."""

    # profiles --------------------------------------------------------------------------------
    @abstractmethod
    async def upsert_profile(
        self,
        user_id: int,
        *,
        username: str | None = None,
        first_name: str | None = None,
        language: str | None = None,
    ) -> Profile:
        """Create the profile or refresh its names; never touches blocked flags or travellers."""

    @abstractmethod
    async def get_profile(self, user_id: int) -> Profile | None: ...

    @abstractmethod
    async def find_profile_by_username(self, username: str) -> Profile | None:
        """Case-insensitive, with or without the leading '@'."""

    @abstractmethod
    async def set_blocked(self, user_id: int, blocked: bool) -> bool:
        """Admin block flag. Returns False when there is no such profile."""

    @abstractmethod
    async def set_bot_blocked(self, user_id: int, bot_blocked: bool) -> None:
        """Remember that the user blocked the bot (so broadcasts skip them)."""

    @abstractmethod
    async def save_travellers(self, user_id: int, travellers: tuple[Traveller, ...]) -> None:
        """Replace the user's saved travellers (offered again on the next booking)."""

    @abstractmethod
    async def list_recipient_ids(self) -> list[int]:
        """Users a broadcast may reach: not blocked by an admin, not having blocked the bot."""

    @abstractmethod
    async def delete_user_data(self, user_id: int) -> int:
        """Erase the profile and saved travellers; anonymise the user's bookings' personal
        fields (names, documents, contacts). Returns how many bookings were anonymised."""

    # bookings --------------------------------------------------------------------------------
    @abstractmethod
    async def create_booking(self, booking: NewBooking) -> Booking:
        """Store a booking under a fresh reference (retried on the rare collision)."""

    @abstractmethod
    async def get_booking(self, booking_id: str) -> Booking | None: ...

    @abstractmethod
    async def get_booking_by_reference(
        self, reference: str, *, user_id: int | None
    ) -> Booking | None:
        """Look a booking up by reference (case-insensitive). With ``user_id`` the lookup is
        scoped to that owner: someone else's reference is simply not found. ``None`` is the
        admin's unscoped lookup."""

    @abstractmethod
    async def get_booking_by_session(self, checkout_session_id: str) -> Booking | None: ...

    @abstractmethod
    async def list_bookings(self, user_id: int, *, limit: int = 20) -> list[Booking]:
        """The user's bookings, newest first."""

    @abstractmethod
    async def attach_checkout(
        self, booking_id: str, *, checkout_session_id: str, payment_deadline: datetime
    ) -> Booking:
        """Record the payment session (a new link replaces an old one) and its deadline."""

    @abstractmethod
    async def transition(
        self,
        booking_id: str,
        expected: BookingStatus,
        new: BookingStatus,
        *,
        payment_intent_id: str | None = None,
    ) -> bool:
        """Move the status from ``expected`` to ``new`` in one conditional update.

        Returns whether it applied; of any number of concurrent callers exactly one wins.
        Raises ``IllegalTransitionError`` for a move that ``TRANSITIONS`` forbids.
        """

    @abstractmethod
    async def list_bookings_by_status(
        self, status: BookingStatus, *, user_id: int | None = None
    ) -> list[Booking]: ...

    # payment events --------------------------------------------------------------------------
    @abstractmethod
    async def record_payment_event(
        self, event_id: str, event_type: str, booking_id: str | None = None
    ) -> bool:
        """Remember a Stripe event id. True only for the first caller with that id."""

    @abstractmethod
    async def list_payment_events(self, booking_id: str) -> list[tuple[str, str, datetime]]:
        """(event id, type, received at) for one booking, oldest first."""

    # search log, audit, statistics -----------------------------------------------------------
    @abstractmethod
    async def log_search(self, entry: SearchLogEntry) -> int:
        """Store one search; returns its id for the funnel marks."""

    @abstractmethod
    async def mark_search_stage(self, search_id: int, stage: str) -> None:
        """Funnel: ``stage`` is "chosen" (itinerary picked) or "reviewed" (reached review)."""

    @abstractmethod
    async def append_audit(self, entry: AuditEntry) -> None: ...

    @abstractmethod
    async def list_audit(self, *, limit: int = 50) -> list[AuditEntry]:
        """Newest first."""

    @abstractmethod
    async def stats(self, since: datetime) -> Stats: ...

    @abstractmethod
    async def funnel(self, since: datetime) -> dict[str, int]:
        """Counts for search → chosen → reviewed → paid since ``since``."""
