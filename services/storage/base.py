"""The storage port: everything the bot keeps beyond a conversation.

Each operation that must be atomic under many workers (a status transition, recording an event)
is one conditional statement in the adapter, so concurrent callers can never both win.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

from services.alert_models import AlertUpdate, NewPriceAlert, PriceAlert
from services.models import (
    AuditEntry,
    Booking,
    BookingStatus,
    Broadcast,
    BroadcastStatus,
    DeliveryStatus,
    Fulfilment,
    IllegalTransitionError,
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


# Funnel keys, in the order a traveller passes them; the middle two are marked on a search.
FUNNEL_STAGES = ("search", "chosen", "reviewed", "paid")
SEARCH_STAGES = frozenset({"chosen", "reviewed"})

# How a claimed delivery can end; ``interrupted`` is only set by recovery.
DELIVERY_OUTCOMES = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.BOT_BLOCKED}
)

BROADCAST_TRANSITIONS: dict[BroadcastStatus, frozenset[BroadcastStatus]] = {
    BroadcastStatus.RUNNING: frozenset({BroadcastStatus.CANCELLED, BroadcastStatus.DONE}),
    BroadcastStatus.CANCELLED: frozenset(),
    BroadcastStatus.DONE: frozenset(),
}


# Rows deleted per table per retention run, so one run never holds a table for long.
PURGE_BATCH = 5000
RETENTION_TABLES = ("admin_audit", "payment_events", "flight_searches")

# Trip reminders: the kinds a booking gets (one row each in booking_reminders, claimed before
# sending), and how a claimed one ended. The return_ kinds are for the flight home of a round
# trip, selected on bookings.returns_at instead of bookings.departs_at.
REMINDER_KINDS = frozenset({"checkin", "departure", "return_checkin", "return_departure"})
RETURN_REMINDER_KINDS = frozenset({"return_checkin", "return_departure"})
REMINDER_OUTCOMES = frozenset({"sent", "skipped", "bot_blocked", "failed"})


def check_broadcast_transition(current: BroadcastStatus, new: BroadcastStatus) -> None:
    if new not in BROADCAST_TRANSITIONS[current]:
        raise IllegalTransitionError(f"a broadcast cannot go from {current} to {new}")


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
        """Create the profile or refresh its names; never touches blocked flags or travellers.

        Username and first name mirror Telegram (``None`` clears them); ``language`` is a
        preference and only changes when given."""

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
    async def set_reminders(self, user_id: int, on: bool) -> Profile:
        """Turn the user's trip reminders on or off (creating the profile if need be)."""

    @abstractmethod
    async def list_recipient_ids(self) -> list[int]:
        """Users a broadcast may reach: not blocked by an admin, not having blocked the bot."""

    @abstractmethod
    async def delete_user_data(self, user_id: int) -> int:
        """Erase the profile and saved travellers; anonymise the user's bookings' personal
        fields (names, documents, contacts). Returns how many bookings were anonymised.
        Bookings held by ``hold_booking_data`` keep theirs until ``erase_held_bookings``.
        The user's price alerts are deleted.

        Bookings keep their owner id, route, amount and status (accounting, and a later refund
        still reaches the traveller); the search log forgets whose searches they were."""

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
    async def attach_provider_order(
        self,
        booking_id: str,
        *,
        order_id: str | None = None,
        token: str | None = None,
        airline_reference: str | None = None,
        ticket_numbers: Sequence[str] | None = None,
    ) -> Booking:
        """Record the flight provider's order on the booking: its id (and what pays it) when it
        is made, the airline's reference and e-tickets once issued. Arguments left None keep
        what is stored. Raises ``BookingNotFoundError``; ``ValueError`` when the order id is
        another booking's."""

    @abstractmethod
    async def get_booking_by_provider_order(self, order_id: str) -> Booking | None:
        """The booking a provider's order belongs to (provider webhooks name the order)."""

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
        Raises ``IllegalTransitionError`` for a move that ``TRANSITIONS`` forbids and
        ``BookingNotFoundError`` when there is no such booking. ``payment_intent_id``, when
        given, is stored by the same update.
        """

    @abstractmethod
    async def reserve_refund(self, booking_id: str, amount_minor: int) -> int | None:
        """Claim ``amount_minor`` of what is left to refund on the booking, in one conditional
        update (refunded + pending + amount <= the amount paid), and number the attempt.

        Returns the attempt number (1, 2, ...), unique per booking, or None when the claim
        would give back more than was paid (or ``amount_minor`` is not positive): of two
        concurrent claims on the last of the money, one wins."""

    @abstractmethod
    async def settle_refund(self, booking_id: str, amount_minor: int, *, sent: bool) -> None:
        """A claimed refund ended: ``sent`` moves it to refunded, otherwise the claim is
        released so the money can be refunded again."""

    @abstractmethod
    async def list_stale_refund_claims(
        self, updated_before: datetime, *, limit: int = 100
    ) -> list[Booking]:
        """Bookings with money claimed for a refund and untouched since ``updated_before``:
        the worker sending it stopped, or Stripe never said whether it made the refund."""

    @abstractmethod
    async def resolve_refund_claim(
        self, booking_id: str, *, expected_refunded: int, expected_pending: int, refunded: int
    ) -> bool:
        """End a stale claim with what the gateway says went back: ``refunded`` becomes the
        amount refunded and nothing stays pending, in one conditional update that applies
        only while the booking still reads ``expected_refunded`` / ``expected_pending`` (of
        two sweepers, one wins; a late ``settle_refund`` of the same claim changes nothing)."""

    @abstractmethod
    async def claim_checkout_renewal(self, booking_id: str, limit: int) -> int | None:
        """Count one more payment link for the booking unless it already had ``limit``;
        returns its number (1, 2, ...; unique per booking) or None at the limit."""

    @abstractmethod
    async def hold_booking_data(self, booking_id: str, until: datetime) -> None:
        """Keep the booking's travellers through ``delete_user_data`` until ``until`` (the
        trip is over); ``erase_held_bookings`` erases them then."""

    @abstractmethod
    async def erase_held_bookings(self, now: datetime) -> int:
        """Anonymise the travellers of held bookings whose hold ended by ``now`` or that are
        no longer paid or confirmed (cancelled, refunded); returns how many."""

    @abstractmethod
    async def list_bookings_by_status(
        self, status: BookingStatus, *, user_id: int | None = None
    ) -> list[Booking]:
        """Every booking in ``status`` (optionally one user's), newest first."""

    @abstractmethod
    async def list_overdue(self, now: datetime, *, limit: int = 100) -> list[Booking]:
        """Bookings still awaiting payment whose deadline is before ``now``, earliest deadline
        first, at most ``limit``: the overdue sweep reads only these, however many links are
        open."""

    # trip reminders --------------------------------------------------------------------------
    # The scheduled job (services/reminders.py) asks for the bookings that may be due, claims
    # each (booking, kind) before sending, and records how it ended. The claim is one
    # ``INSERT ... ON CONFLICT DO NOTHING``, so of any number of workers exactly one sends.
    @abstractmethod
    async def list_reminder_candidates(
        self,
        kind: str,
        *,
        departs_after: datetime,
        departs_until: datetime,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Booking]:
        """Paid or confirmed bookings whose reminded flight leaves in (``departs_after``,
        ``departs_until``], whose owner has a profile with reminders on and is blocked by
        neither side, and that have no ``kind`` reminder row yet; earliest departure first
        (then id). The reminded flight is the outbound one, or for ``RETURN_REMINDER_KINDS``
        the first flight home (one-way trips have none). Read through an index on that
        departure (``departs_at`` / ``returns_at``), never the whole table."""

    @abstractmethod
    async def claim_reminder(self, booking_id: str, kind: str) -> bool:
        """Take the right to send the booking's ``kind`` reminder: True for exactly one caller
        ever. Raises ``ValueError`` for an unknown kind, ``BookingNotFoundError`` for no such
        booking."""

    @abstractmethod
    async def finish_reminder(self, booking_id: str, kind: str, outcome: str) -> bool:
        """Record how a claimed reminder ended (``REMINDER_OUTCOMES``); False when it was not
        claimed or already finished."""

    # payment events --------------------------------------------------------------------------
    @abstractmethod
    async def record_payment_event(
        self, event_id: str, event_type: str, booking_id: str | None = None
    ) -> bool:
        """Remember a Stripe event id. True only for the first caller with that id."""

    @abstractmethod
    async def list_payment_events(self, booking_id: str) -> list[tuple[str, str, datetime]]:
        """(event id, type, received at) for one booking, oldest first."""

    # Applying a gateway event: ``receive_payment_event`` before its effects run,
    # ``mark_payment_event_applied`` once they are all done. A delivery whose effects failed
    # half-way (storage error, worker killed) is therefore applied again by Stripe's retry;
    # each effect is a conditional step, so running them twice changes nothing twice.
    @abstractmethod
    async def receive_payment_event(
        self, event_id: str, event_type: str, booking_id: str | None = None
    ) -> bool:
        """Note an event as received (once per id). True unless it was already applied."""

    @abstractmethod
    async def mark_payment_event_applied(self, event_id: str) -> None:
        """The event's effects are done: later deliveries are answered "already handled"."""

    @abstractmethod
    async def list_checkout_sessions(self, booking_id: str) -> list[str]:
        """Every Checkout Session id ``attach_checkout`` ever gave the booking, oldest first
        (a renewal replaces ``checkout_session_id``; the earlier ones stay here)."""

    # fulfilment: ticketing a paid booking ----------------------------------------------------
    @abstractmethod
    async def claim_fulfilment(
        self, booking_id: str, owner: str, *, now: datetime, until: datetime
    ) -> Fulfilment | None:
        """Take or renew the right to ticket the booking until ``until``: the booking's journal
        when ``owner`` holds it now (it was free, already ``owner``'s, or ran out before
        ``now``), else None. One conditional statement, so two claimers never both win."""

    @abstractmethod
    async def release_fulfilment(self, booking_id: str, owner: str) -> None:
        """Give the right up (only if ``owner`` holds it)."""

    @abstractmethod
    async def note_fulfilment(
        self,
        booking_id: str,
        *,
        provider_order: str | None = None,
        provider_booking_id: str | None = None,
    ) -> None:
        """Write the journal: the order an attempt placed, or the provider's booking once the
        ticket is issued. A value left None keeps what is there."""

    @abstractmethod
    async def list_stuck_paid(self, updated_before: datetime, *, limit: int = 100) -> list[Booking]:
        """Paid bookings whose status has not moved since before ``updated_before``, oldest
        first: what reconciliation tickets (or refunds) when their worker is gone."""

    @abstractmethod
    async def list_expired_between(
        self, since: datetime, until: datetime, *, limit: int = 100
    ) -> list[Booking]:
        """Expired bookings with a session whose payment deadline lies in [since, until):
        reconciliation asks the gateway whether such a session was paid after all."""

    # search log, audit, statistics -----------------------------------------------------------
    @abstractmethod
    async def log_search(self, entry: SearchLogEntry) -> int:
        """Store one search; returns its id for the funnel marks."""

    @abstractmethod
    async def last_route(self, user_id: int) -> tuple[str, str] | None:
        """The (origin, destination) place codes of the user's newest logged search, for
        "Again: Lisbon → Tokyo?" at /start; None if they never searched."""

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
        """Counts for search → chosen → reviewed → paid since ``since``, keyed by
        ``FUNNEL_STAGES``. "paid" counts bookings whose money was taken, whatever came after."""

    # retention -------------------------------------------------------------------------------
    @abstractmethod
    async def delete_expired_records(
        self,
        *,
        denied_audit_before: datetime,
        payment_events_before: datetime,
        searches_before: datetime,
        limit: int = PURGE_BATCH,
    ) -> dict[str, int]:
        """Delete, oldest first and at most ``limit`` rows per table, what only grows: refused
        admin attempts (audit action ``denied``), payment events of no live booking (see
        ``LIVE_STATUSES``) and searches, each older than its cutoff. Admin actions and
        bookings are never deleted. Returns the rows deleted per table name."""

    # broadcasts ------------------------------------------------------------------------------
    # A broadcast survives a restart and reaches nobody twice. Each recipient has a delivery
    # row: pending → sending (claimed) → sent | failed | bot_blocked. One worker at a time
    # sends a broadcast: the one holding its lease. The worker loop is:
    #   for each of list_running_broadcasts() whose claim_broadcast_lease(...) succeeds:
    #   recover_stuck_deliveries(...) (the previous holder is gone);
    #   then repeatedly claim_deliveries(id, n) → send each → finish_delivery(...), renewing
    #   the lease well before it runs out;
    #   when a claim returns nothing and broadcast_counts(id)["sending"] == 0,
    #   set_broadcast_status(id, RUNNING, DONE).
    # Claim only what is about to be sent, so a crash leaves as few rows in doubt as possible.

    @abstractmethod
    async def create_broadcast(
        self, admin_id: int, text: str, recipient_ids: Sequence[int]
    ) -> Broadcast:
        """Store a running broadcast with one pending delivery per distinct recipient."""

    @abstractmethod
    async def get_broadcast(self, broadcast_id: int) -> Broadcast | None: ...

    @abstractmethod
    async def list_running_broadcasts(self) -> list[Broadcast]:
        """Oldest first: what a worker resumes after a restart."""

    @abstractmethod
    async def claim_deliveries(self, broadcast_id: int, limit: int) -> list[int]:
        """Atomically move up to ``limit`` pending recipients to ``sending`` and return their
        user ids (ascending). Concurrent claimers get disjoint sets; a broadcast that is no
        longer running hands out nothing."""

    @abstractmethod
    async def finish_delivery(
        self, broadcast_id: int, user_id: int, outcome: DeliveryStatus
    ) -> bool:
        """Record how a claimed delivery ended (``DELIVERY_OUTCOMES``). False when the row was
        not in ``sending`` (already finished or recovered). Does not touch the profile: call
        ``set_bot_blocked`` as well for ``bot_blocked``."""

    @abstractmethod
    async def release_deliveries(self, broadcast_id: int, user_ids: Sequence[int]) -> int:
        """Hand claimed-but-never-attempted recipients back (sending → pending), e.g. when a
        worker is cancelled or shut down cleanly. Only for rows this worker knows it did not
        send. Returns how many were released."""

    @abstractmethod
    async def recover_stuck_deliveries(
        self, broadcast_id: int, *, claimed_before: datetime
    ) -> list[int]:
        """Mark deliveries still ``sending`` since before ``claimed_before`` as ``interrupted``
        and return their user ids.

        Such a row belongs to a worker that died between claiming and recording the outcome:
        Telegram may or may not have delivered the message, and sendMessage cannot be asked.
        Sending again could reach someone twice, so the row is never handed out again; the
        admin's report counts it as interrupted. Pass ``claimed_before=now`` when no other
        worker can be running (single worker, at start-up); with several workers, use a lease
        longer than any send (e.g. now minus a few minutes)."""

    @abstractmethod
    async def set_broadcast_status(
        self, broadcast_id: int, expected: BroadcastStatus, new: BroadcastStatus
    ) -> bool:
        """running → cancelled | done, as one conditional update; False when the broadcast was
        not in ``expected`` (or does not exist). Raises ``IllegalTransitionError`` otherwise."""

    @abstractmethod
    async def claim_broadcast_lease(
        self, broadcast_id: int, owner: str, *, now: datetime, until: datetime
    ) -> bool:
        """Take or renew the right to send a running broadcast until ``until``. True when
        ``owner`` holds it now: it was free, already ``owner``'s, or its holder let it run out
        before ``now``. One conditional update, so two claimers never both win."""

    @abstractmethod
    async def release_broadcast_lease(self, broadcast_id: int, owner: str) -> None:
        """Give the lease up (a clean stop), so another worker can carry on at once."""

    @abstractmethod
    async def broadcast_counts(self, broadcast_id: int) -> dict[str, int]:
        """Deliveries per ``DeliveryStatus`` value, zeros included."""

    @abstractmethod
    async def reseal_travellers(self) -> int:
        """Encrypt again, under the newest key, every stored traveller (bookings and saved
        travellers) that is in clear text or under an older key, so old keys can be retired.
        Each row is rewritten only if unchanged since it was read (a concurrent erasure wins).
        Returns how many rows were rewritten; a second run returns 0."""

    # price alerts ----------------------------------------------------------------------------
    # A check is: list_due_alerts → update_alert(next_check_at=..., expected_version=v) to
    # claim it (the loser of two workers gets None and moves on) → search → update_alert again
    # with the claimed version before notifying, so a notification goes out at most once.

    @abstractmethod
    async def create_alert(self, alert: NewPriceAlert, *, limit: int) -> PriceAlert | None:
        """Store an active alert unless the user already has ``limit`` that are not finished
        (None then). Atomic: two taps at once never make the user's sixth of five."""

    @abstractmethod
    async def get_alert(self, alert_id: int) -> PriceAlert | None: ...

    @abstractmethod
    async def list_alerts(self, user_id: int) -> list[PriceAlert]:
        """The user's alerts that are not finished, oldest first."""

    @abstractmethod
    async def list_due_alerts(self, now: datetime, *, limit: int) -> list[PriceAlert]:
        """Active alerts whose ``next_check_at`` is at or before ``now``, the longest waiting
        first, at most ``limit``."""

    @abstractmethod
    async def update_alert(
        self, alert_id: int, *, expected_version: int, update: AlertUpdate
    ) -> PriceAlert | None:
        """Apply ``update`` and add one to the version, in one conditional update that holds
        only while the alert is still at ``expected_version``: the alert as it is now, or None
        when another change came first (or there is no such alert)."""

    @abstractmethod
    async def delete_alert(self, alert_id: int, user_id: int) -> bool:
        """Delete the user's alert; False when it is not theirs or already gone."""
