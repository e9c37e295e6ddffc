"""Supabase storage: supabase-py's async client → PostgREST → PostgreSQL, with the service role.

Every operation is one PostgREST request, and so one SQL statement or one function call: a
status transition is a PATCH filtered on the expected status, an event is recorded with
``INSERT ... ON CONFLICT DO NOTHING``, multi-step work (erasing a user, creating a broadcast,
claiming deliveries, statistics) runs in the SQL functions of supabase/migrations through rpc.
Concurrent workers therefore get exactly one winner without any locking here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import httpx
from httpx_aiohttp import AiohttpTransport
from postgrest import APIError, APIResponse
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from services.alert_models import AlertUpdate, NewPriceAlert, PriceAlert, alert_from_row
from services.models import (
    LIVE_STATUSES,
    AuditEntry,
    Booking,
    BookingStatus,
    Broadcast,
    BroadcastStatus,
    DeliveryStatus,
    Fulfilment,
    NewBooking,
    Profile,
    SearchLogEntry,
    Stats,
    Traveller,
    check_transition,
    utcnow,
)
from services.storage import rows
from services.storage.base import (
    FUNNEL_STAGES,
    PURGE_BATCH,
    REFERENCE_ATTEMPTS,
    RETENTION_TABLES,
    BookingNotFoundError,
    Storage,
    StorageUnavailableError,
    check_broadcast_transition,
    new_reference,
)
from services.storage.sealing import Sealer

# Hosted Supabase answers at most 1000 rows per request by default; longer lists are paged.
_PAGE = 1000
# Ids per request when filtering with in.(...), to keep URLs short.
_IN_CHUNK = 200


class _Query(Protocol):
    async def execute(self) -> APIResponse: ...


def _iso(moment: datetime) -> str:
    """UTC with a 'Z', safe inside a query string (a '+' would need escaping)."""
    return rows.aware(moment).isoformat().replace("+00:00", "Z")


def _row_list(data: object) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise StorageUnavailableError("Supabase answered with something other than rows")
    return data


def _object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise StorageUnavailableError("Supabase answered with something other than an object")
    return data


class SupabaseStorage(Storage):
    """Storage in a Supabase project (``SUPABASE_URL`` + ``SUPABASE_SERVICE_ROLE_KEY``)."""

    name = "supabase"

    def __init__(
        self,
        client: AsyncClient,
        http: httpx.AsyncClient,
        *,
        sealer: Sealer,
        references: Callable[[], str] = new_reference,
    ) -> None:
        """Prefer ``create``; ``sealer`` encrypts travellers' documents and contacts (the key
        stays with the bot, never in the database); ``references`` draws booking references
        (replaceable to exercise collisions)."""
        self._client: AsyncClient | None = client
        self._http = http
        self._sealer = sealer
        self._references = references

    @classmethod
    async def create(
        cls,
        url: str,
        service_role_key: str,
        *,
        sealer: Sealer,
        request_timeout: float = 10.0,
        references: Callable[[], str] = new_reference,
    ) -> SupabaseStorage:
        """Build the client; no request is made until the first operation (or ``start``).

        postgrest-py's own retries (1 + 2 + 4 s of back-off on reads) are off: a chat turn holds
        its lock meanwhile, and the port's answer to an outage is StorageUnavailableError at
        once, so the user is told to try again shortly.

        Requests go over aiohttp (``AiohttpTransport``), not httpx's own pool: httpcore checks
        every pooled connection, with a syscall each, on every request, and with 40 requests
        in flight that cost about 1.2 ms of CPU per request against 0.27 ms. The transport
        raises httpx's exceptions, so failures are caught below as before."""
        http = httpx.AsyncClient(
            transport=AiohttpTransport(),
            timeout=httpx.Timeout(request_timeout, connect=min(request_timeout, 5.0)),
        )
        options = AsyncClientOptions(
            httpx_client=http,
            auto_refresh_token=False,
            persist_session=False,
            postgrest_client_retry=False,
        )
        try:
            client = await acreate_client(url, service_role_key, options=options)
        except BaseException:
            await http.aclose()
            raise
        return cls(client, http, sealer=sealer, references=references)

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.ping()

    async def close(self) -> None:
        self._client = None
        await self._http.aclose()

    async def ping(self) -> None:
        await self._execute(self._table("profiles").select("id").limit(1))

    # plumbing --------------------------------------------------------------------------------
    def _api(self) -> AsyncClient:
        if self._client is None:
            raise StorageUnavailableError("Supabase storage is closed")
        return self._client

    def _table(self, name: str) -> Any:
        # postgrest's builders are typed per method; Any keeps the chains readable here.
        return self._api().table(name)

    def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        return self._api().rpc(function, params)

    async def _execute(self, query: _Query) -> object:
        """Run one request; database refusals become ValueError, outages StorageUnavailable."""
        try:
            response = await query.execute()
        except APIError as exc:
            if exc.code and exc.code.startswith("23"):  # integrity constraint violation
                raise ValueError(f"the database refused the change: {exc.message}") from exc
            raise StorageUnavailableError(f"Supabase error {exc.code}: {exc.message}") from exc
        except httpx.HTTPError as exc:
            raise StorageUnavailableError(
                f"Supabase did not answer ({type(exc).__name__})"
            ) from exc
        return response.data

    async def _rows(self, query: _Query) -> list[dict[str, Any]]:
        return _row_list(await self._execute(query))

    async def _first(self, query: _Query) -> dict[str, Any] | None:
        found = await self._rows(query)
        return found[0] if found else None

    async def _all_pages(self, build: Callable[[], Any]) -> list[dict[str, Any]]:
        """Every row of an ordered query, a page at a time."""
        collected: list[dict[str, Any]] = []
        while True:
            page = await self._rows(build().range(len(collected), len(collected) + _PAGE - 1))
            collected.extend(page)
            if len(page) < _PAGE:
                return collected

    # profiles --------------------------------------------------------------------------------
    async def upsert_profile(
        self,
        user_id: int,
        *,
        username: str | None = None,
        first_name: str | None = None,
        language: str | None = None,
    ) -> Profile:
        payload: dict[str, Any] = {"id": user_id, "username": username, "first_name": first_name}
        if language is not None:  # omitted columns keep their value on conflict
            payload["language"] = language
        row = await self._first(self._table("profiles").upsert(payload, on_conflict="id"))
        if row is None:
            raise StorageUnavailableError("Supabase did not return the profile")
        return rows.profile_from_row(row, sealer=self._sealer)

    async def get_profile(self, user_id: int) -> Profile | None:
        row = await self._first(self._table("profiles").select("*").eq("id", user_id).limit(1))
        return rows.profile_from_row(row, sealer=self._sealer) if row else None

    async def find_profile_by_username(self, username: str) -> Profile | None:
        name = rows.normalise_username(username)
        if name is None:
            return None
        row = await self._first(self._rpc("find_profile_by_username", {"p_username": name}))
        return rows.profile_from_row(row, sealer=self._sealer) if row else None

    async def set_blocked(self, user_id: int, blocked: bool) -> bool:
        changed = await self._rows(
            self._table("profiles").update({"blocked": blocked}).eq("id", user_id)
        )
        return bool(changed)

    async def set_bot_blocked(self, user_id: int, bot_blocked: bool) -> None:
        await self._execute(
            self._table("profiles").upsert(
                {"id": user_id, "bot_blocked": bot_blocked}, on_conflict="id", returning="minimal"
            )
        )

    async def save_travellers(self, user_id: int, travellers: tuple[Traveller, ...]) -> None:
        await self._execute(
            self._table("profiles").upsert(
                {
                    "id": user_id,
                    "saved_travellers": rows.travellers_to_json(travellers, sealer=self._sealer),
                },
                on_conflict="id",
                returning="minimal",
            )
        )

    async def set_reminders(self, user_id: int, on: bool) -> Profile:
        row = await self._first(
            self._table("profiles").upsert({"id": user_id, "reminders": on}, on_conflict="id")
        )
        if row is None:
            raise StorageUnavailableError("Supabase did not return the profile")
        return rows.profile_from_row(row, sealer=self._sealer)

    async def list_recipient_ids(self) -> list[int]:
        found = await self._all_pages(
            lambda: (
                self._table("profiles")
                .select("id")
                .eq("blocked", "false")
                .eq("bot_blocked", "false")
                .order("id")
            )
        )
        return [int(row["id"]) for row in found]

    async def delete_user_data(self, user_id: int) -> int:
        # The alerts first, in a request of their own: deleting is idempotent, so a failure
        # of either request is undone by the traveller's retry of /deletedata.
        await self._execute(
            self._table("price_alerts").delete(returning="minimal").eq("user_id", user_id)
        )
        anonymised = await self._execute(
            self._rpc(
                "delete_user_data",
                {"p_user_id": user_id, "p_erased": dict(rows.ERASED_TRAVELLER_FIELDS)},
            )
        )
        if not isinstance(anonymised, int):
            raise StorageUnavailableError("Supabase did not say how many bookings it changed")
        return anonymised

    # bookings --------------------------------------------------------------------------------
    async def create_booking(self, booking: NewBooking) -> Booking:
        for _ in range(REFERENCE_ATTEMPTS):
            row = rows.booking_row(
                booking,
                booking_id=rows.new_booking_id(),
                reference=self._references(),
                sealer=self._sealer,
            )
            try:
                stored = await self._first(self._table("bookings").insert(row))
            except ValueError as exc:
                if "bookings_reference_key" in str(exc):
                    continue  # the rare collision: draw another reference
                raise
            if stored is None:
                raise StorageUnavailableError("Supabase did not return the booking")
            return rows.booking_from_row(stored, sealer=self._sealer)
        raise StorageUnavailableError("no free booking reference found; try again")

    async def get_booking(self, booking_id: str) -> Booking | None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return None
        row = await self._first(self._table("bookings").select("*").eq("id", canonical).limit(1))
        return rows.booking_from_row(row, sealer=self._sealer) if row else None

    async def get_booking_by_reference(
        self, reference: str, *, user_id: int | None
    ) -> Booking | None:
        normalised = rows.normalise_reference(reference)
        if normalised is None:
            return None
        query = self._table("bookings").select("*").eq("reference", normalised)
        if user_id is not None:
            query = query.eq("user_id", user_id)
        row = await self._first(query.limit(1))
        return rows.booking_from_row(row, sealer=self._sealer) if row else None

    async def get_booking_by_session(self, checkout_session_id: str) -> Booking | None:
        row = await self._first(
            self._table("bookings")
            .select("*")
            .eq("checkout_session_id", checkout_session_id)
            .limit(1)
        )
        return rows.booking_from_row(row, sealer=self._sealer) if row else None

    async def list_bookings(self, user_id: int, *, limit: int = 20) -> list[Booking]:
        if limit <= 0:
            return []
        found = await self._rows(
            self._table("bookings")
            .select("*")
            .eq("user_id", user_id)
            .order("created_at", desc=True)
            .order("id", desc=True)
            .limit(limit)
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def attach_checkout(
        self, booking_id: str, *, checkout_session_id: str, payment_deadline: datetime
    ) -> Booking:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        update = {
            "checkout_session_id": checkout_session_id,
            "payment_deadline": _iso(payment_deadline),
        }
        try:
            row = await self._first(self._table("bookings").update(update).eq("id", canonical))
        except ValueError as exc:
            raise ValueError("that checkout session belongs to another booking") from exc
        if row is None:
            raise BookingNotFoundError(booking_id)
        # Every session the booking ever had (list_checkout_sessions); after the booking's own
        # update, so a session refused there is never recorded as this booking's.
        await self._execute(
            self._table("checkout_sessions").upsert(
                {"session_id": checkout_session_id, "booking_id": canonical},
                on_conflict="session_id",
                ignore_duplicates=True,
                returning="minimal",
            )
        )
        return rows.booking_from_row(row, sealer=self._sealer)

    async def attach_provider_order(
        self,
        booking_id: str,
        *,
        order_id: str | None = None,
        token: str | None = None,
        airline_reference: str | None = None,
        ticket_numbers: Sequence[str] | None = None,
    ) -> Booking:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        update = rows.provider_order_update(
            order_id=order_id,
            token=token,
            airline_reference=airline_reference,
            ticket_numbers=ticket_numbers,
        )
        if not update:
            found = await self.get_booking(canonical)
            if found is None:
                raise BookingNotFoundError(booking_id)
            return found
        try:
            row = await self._first(self._table("bookings").update(update).eq("id", canonical))
        except ValueError as exc:
            raise ValueError("that provider order belongs to another booking") from exc
        if row is None:
            raise BookingNotFoundError(booking_id)
        return rows.booking_from_row(row, sealer=self._sealer)

    async def get_booking_by_provider_order(self, order_id: str) -> Booking | None:
        row = await self._first(
            self._table("bookings").select("*").eq("provider_order_id", order_id).limit(1)
        )
        return rows.booking_from_row(row, sealer=self._sealer) if row else None

    async def transition(
        self,
        booking_id: str,
        expected: BookingStatus,
        new: BookingStatus,
        *,
        payment_intent_id: str | None = None,
    ) -> bool:
        check_transition(expected, new)
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        update: dict[str, Any] = {"status": new.value}
        if payment_intent_id is not None:
            update["payment_intent_id"] = payment_intent_id
        changed = await self._rows(
            self._table("bookings")
            .update(update, returning="representation")
            .eq("id", canonical)
            .eq("status", expected.value)
        )
        if changed:
            return True
        if await self.get_booking(canonical) is None:
            raise BookingNotFoundError(booking_id)
        return False

    async def reserve_refund(self, booking_id: str, amount_minor: int) -> int | None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None or amount_minor <= 0:
            return None
        claimed = await self._rows(
            self._rpc("reserve_refund", {"p_booking_id": canonical, "p_amount": amount_minor})
        )
        return int(claimed[0]["attempt"]) if claimed else None

    async def settle_refund(self, booking_id: str, amount_minor: int, *, sent: bool) -> None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        await self._rows(
            self._rpc(
                "settle_refund",
                {"p_booking_id": canonical, "p_amount": amount_minor, "p_sent": sent},
            )
        )

    async def list_stale_refund_claims(
        self, updated_before: datetime, *, limit: int = 100
    ) -> list[Booking]:
        found = await self._rows(
            self._table("bookings")
            .select("*")
            .gt("refund_pending_minor", 0)
            .lt("updated_at", rows.aware(updated_before).isoformat())
            .order("updated_at")
            .limit(limit)
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def resolve_refund_claim(
        self, booking_id: str, *, expected_refunded: int, expected_pending: int, refunded: int
    ) -> bool:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        changed = await self._rows(
            self._table("bookings")
            .update(
                {"refunded_minor": refunded, "refund_pending_minor": 0},
                returning="representation",
            )
            .eq("id", canonical)
            .eq("refunded_minor", expected_refunded)
            .eq("refund_pending_minor", expected_pending)
            .gt("refund_pending_minor", 0)
        )
        return bool(changed)

    async def claim_checkout_renewal(self, booking_id: str, limit: int) -> int | None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        claimed = await self._rows(
            self._rpc("claim_checkout_renewal", {"p_booking_id": canonical, "p_limit": limit})
        )
        return int(claimed[0]["renewals"]) if claimed else None

    async def hold_booking_data(self, booking_id: str, until: datetime) -> None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        await self._rows(
            self._table("bookings").update({"erase_after": _iso(until)}).eq("id", canonical)
        )

    async def erase_held_bookings(self, now: datetime) -> int:
        erased = await self._execute(
            self._rpc(
                "erase_held_bookings",
                {"p_now": _iso(now), "p_erased": dict(rows.ERASED_TRAVELLER_FIELDS)},
            )
        )
        if not isinstance(erased, int):
            raise StorageUnavailableError("Supabase did not say how many bookings it erased")
        return erased

    async def list_bookings_by_status(
        self, status: BookingStatus, *, user_id: int | None = None
    ) -> list[Booking]:
        def build() -> Any:
            query = self._table("bookings").select("*").eq("status", status.value)
            if user_id is not None:
                query = query.eq("user_id", user_id)
            return query.order("created_at", desc=True).order("id", desc=True)

        return [
            rows.booking_from_row(row, sealer=self._sealer) for row in await self._all_pages(build)
        ]

    async def list_overdue(self, now: datetime, *, limit: int = 100) -> list[Booking]:
        found = await self._rows(
            self._table("bookings")
            .select("*")
            .eq("status", BookingStatus.AWAITING_PAYMENT.value)
            .lt("payment_deadline", rows.aware(now).isoformat())
            .order("payment_deadline")
            .limit(limit)
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    # trip reminders --------------------------------------------------------------------------
    async def list_reminder_candidates(
        self,
        kind: str,
        *,
        departs_after: datetime,
        departs_until: datetime,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Booking]:
        rows.check_reminder_kind(kind)
        if limit <= 0:
            return []
        found = await self._rows(
            self._rpc(
                "reminder_candidates",
                {
                    "p_kind": kind,
                    "p_after": _iso(departs_after),
                    "p_until": _iso(departs_until),
                    "p_limit": limit,
                    "p_offset": max(offset, 0),
                },
            )
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def claim_reminder(self, booking_id: str, kind: str) -> bool:
        rows.check_reminder_kind(kind)
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        try:
            inserted = await self._rows(
                self._table("booking_reminders").upsert(
                    {"booking_id": canonical, "kind": kind},
                    on_conflict="booking_id,kind",
                    ignore_duplicates=True,  # INSERT ... ON CONFLICT DO NOTHING
                )
            )
        except ValueError as exc:  # the foreign key: no such booking
            raise BookingNotFoundError(booking_id) from exc
        return bool(inserted)

    async def finish_reminder(self, booking_id: str, kind: str, outcome: str) -> bool:
        rows.check_reminder_outcome(outcome)
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return False
        changed = await self._rows(
            self._table("booking_reminders")
            .update({"status": outcome, "finished_at": _iso(utcnow())})
            .eq("booking_id", canonical)
            .eq("kind", kind)
            .eq("status", "sending")
        )
        return bool(changed)

    # payment events --------------------------------------------------------------------------
    async def record_payment_event(
        self, event_id: str, event_type: str, booking_id: str | None = None
    ) -> bool:
        inserted = await self._rows(
            self._table("payment_events").upsert(
                {
                    "event_id": event_id,
                    "type": event_type,
                    "booking_id": rows.event_booking_id(booking_id),
                },
                on_conflict="event_id",
                ignore_duplicates=True,  # INSERT ... ON CONFLICT DO NOTHING: returns new rows only
            )
        )
        return bool(inserted)

    async def list_payment_events(self, booking_id: str) -> list[tuple[str, str, datetime]]:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return []
        found = await self._all_pages(
            lambda: (
                self._table("payment_events")
                .select("event_id,type,received_at")
                .eq("booking_id", canonical)
                .order("received_at")
                .order("event_id")
            )
        )
        return [rows.payment_event_from_row(row) for row in found]

    async def receive_payment_event(
        self, event_id: str, event_type: str, booking_id: str | None = None
    ) -> bool:
        await self._execute(
            self._table("payment_events").upsert(
                {
                    "event_id": event_id,
                    "type": event_type,
                    "booking_id": rows.event_booking_id(booking_id),
                    "applied_at": None,
                },
                on_conflict="event_id",
                ignore_duplicates=True,
                returning="minimal",
            )
        )
        row = await self._first(
            self._table("payment_events").select("applied_at").eq("event_id", event_id).limit(1)
        )
        return row is None or row.get("applied_at") is None

    async def mark_payment_event_applied(self, event_id: str) -> None:
        await self._execute(
            self._table("payment_events")
            .update({"applied_at": _iso(utcnow())}, returning="minimal")
            .eq("event_id", event_id)
            .is_("applied_at", "null")
        )

    async def list_checkout_sessions(self, booking_id: str) -> list[str]:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return []
        found = await self._rows(
            self._table("checkout_sessions")
            .select("session_id")
            .eq("booking_id", canonical)
            .order("created_at")
            .order("session_id")
        )
        return [str(row["session_id"]) for row in found]

    # fulfilment ------------------------------------------------------------------------------
    async def claim_fulfilment(
        self, booking_id: str, owner: str, *, now: datetime, until: datetime
    ) -> Fulfilment | None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        try:
            row = await self._first(
                self._rpc(
                    "claim_fulfilment",
                    {
                        "p_booking_id": canonical,
                        "p_owner": owner,
                        "p_now": rows.aware(now).isoformat(),
                        "p_until": rows.aware(until).isoformat(),
                    },
                )
            )
        except ValueError as exc:  # the foreign key: no such booking
            raise BookingNotFoundError(booking_id) from exc
        return rows.fulfilment_from_row(row) if row else None

    async def release_fulfilment(self, booking_id: str, owner: str) -> None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return
        await self._execute(
            self._table("fulfilments")
            .update({"lease_owner": None, "lease_until": None}, returning="minimal")
            .eq("booking_id", canonical)
            .eq("lease_owner", owner)
        )

    async def note_fulfilment(
        self,
        booking_id: str,
        *,
        provider_order: str | None = None,
        provider_booking_id: str | None = None,
    ) -> None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        values: dict[str, Any] = {"booking_id": canonical}
        if provider_order is not None:
            values["provider_order"] = provider_order
        if provider_booking_id is not None:
            values["provider_booking_id"] = provider_booking_id
        # An upsert merges only the columns sent, so what is left out keeps its value.
        await self._execute(
            self._table("fulfilments").upsert(values, on_conflict="booking_id", returning="minimal")
        )

    async def list_stuck_paid(self, updated_before: datetime, *, limit: int = 100) -> list[Booking]:
        found = await self._rows(
            self._table("bookings")
            .select("*")
            .eq("status", BookingStatus.PAID.value)
            .lt("updated_at", rows.aware(updated_before).isoformat())
            .order("updated_at")
            .limit(limit)
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def list_expired_between(
        self, since: datetime, until: datetime, *, limit: int = 100
    ) -> list[Booking]:
        found = await self._rows(
            self._table("bookings")
            .select("*")
            .eq("status", BookingStatus.EXPIRED.value)
            .not_.is_("checkout_session_id", "null")
            .gte("payment_deadline", rows.aware(since).isoformat())
            .lt("payment_deadline", rows.aware(until).isoformat())
            .order("payment_deadline")
            .limit(limit)
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    # search log, audit, statistics -----------------------------------------------------------
    async def log_search(self, entry: SearchLogEntry) -> int:
        row = await self._first(
            self._table("flight_searches").insert(
                {
                    "user_id": entry.user_id,
                    "origin": entry.origin,
                    "destination": entry.destination,
                    "departure": entry.departure.isoformat(),
                    "return_date": rows.iso_date(entry.return_date),
                    "passengers": entry.passengers,
                    "results": entry.results,
                    "cached": entry.cached,
                }
            )
        )
        if row is None:
            raise StorageUnavailableError("Supabase did not return the search id")
        return int(row["id"])

    async def last_route(self, user_id: int) -> tuple[str, str] | None:
        row = await self._first(
            self._table("flight_searches")
            .select("origin,destination")
            .eq("user_id", user_id)
            .order("created_at", desc=True)
            .order("id", desc=True)
            .limit(1)
        )
        return (str(row["origin"]), str(row["destination"])) if row else None

    async def mark_search_stage(self, search_id: int, stage: str) -> None:
        column = rows.stage_column(stage)
        await self._execute(
            self._table("flight_searches")
            .update({column: _iso(utcnow())}, returning="minimal")
            .eq("id", search_id)
            .is_(column, "null")
        )

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._execute(
            self._table("admin_audit").insert(
                {
                    "admin_id": entry.admin_id,
                    "action": entry.action,
                    "target": entry.target,
                    "details": entry.details,
                },
                returning="minimal",
            )
        )

    async def delete_expired_records(
        self,
        *,
        denied_audit_before: datetime,
        payment_events_before: datetime,
        searches_before: datetime,
        limit: int = PURGE_BATCH,
    ) -> dict[str, int]:
        result = _object(
            await self._execute(
                self._rpc(
                    "delete_expired_records",
                    {
                        "p_denied_audit_before": _iso(denied_audit_before),
                        "p_payment_events_before": _iso(payment_events_before),
                        "p_searches_before": _iso(searches_before),
                        "p_live_statuses": sorted(s.value for s in LIVE_STATUSES),
                        "p_limit": limit,
                    },
                )
            )
        )
        return {table: int(result.get(table, 0)) for table in RETENTION_TABLES}

    async def list_audit(self, *, limit: int = 50) -> list[AuditEntry]:
        if limit <= 0:
            return []
        found = await self._rows(
            self._table("admin_audit")
            .select("*")
            .order("created_at", desc=True)
            .order("id", desc=True)
            .limit(limit)
        )
        return [rows.audit_from_row(row) for row in found]

    async def stats(self, since: datetime) -> Stats:
        result = _object(
            await self._execute(
                self._rpc(
                    "booking_stats", {"p_since": _iso(since), "p_top_routes": rows.TOP_ROUTES}
                )
            )
        )
        return rows.stats_from_parts(
            rows.aware(since),
            by_status=result["bookings_by_status"],
            revenue=result["revenue"],
            searches=result["searches"],
            new_users=result["new_users"],
            top_routes=result["top_routes"],
        )

    async def funnel(self, since: datetime) -> dict[str, int]:
        result = _object(await self._execute(self._rpc("search_funnel", {"p_since": _iso(since)})))
        return {stage: int(result[stage]) for stage in FUNNEL_STAGES}

    # broadcasts ------------------------------------------------------------------------------
    async def create_broadcast(
        self, admin_id: int, text: str, recipient_ids: Sequence[int]
    ) -> Broadcast:
        if not text:
            raise ValueError("a broadcast needs a text")
        created = await self._execute(
            self._rpc(
                "create_broadcast",
                {
                    "p_admin_id": admin_id,
                    "p_text": text,
                    "p_recipient_ids": [int(user_id) for user_id in recipient_ids],
                },
            )
        )
        return rows.broadcast_from_row(_object(created))

    async def get_broadcast(self, broadcast_id: int) -> Broadcast | None:
        row = await self._first(
            self._table("broadcasts").select("*").eq("id", broadcast_id).limit(1)
        )
        return rows.broadcast_from_row(row) if row else None

    async def list_running_broadcasts(self) -> list[Broadcast]:
        found = await self._rows(
            self._table("broadcasts")
            .select("*")
            .eq("status", BroadcastStatus.RUNNING.value)
            .order("created_at")
            .order("id")
        )
        return [rows.broadcast_from_row(row) for row in found]

    async def claim_deliveries(self, broadcast_id: int, limit: int) -> list[int]:
        if limit <= 0:
            return []
        claimed = _row_list(
            await self._execute(
                self._rpc(
                    "claim_broadcast_deliveries",
                    {"p_broadcast_id": broadcast_id, "p_limit": limit},
                )
            )
        )
        return sorted(int(row["user_id"]) for row in claimed)

    async def finish_delivery(
        self, broadcast_id: int, user_id: int, outcome: DeliveryStatus
    ) -> bool:
        rows.check_outcome(outcome)
        changed = await self._rows(
            self._table("broadcast_deliveries")
            .update({"status": DeliveryStatus(outcome).value, "finished_at": _iso(utcnow())})
            .eq("broadcast_id", broadcast_id)
            .eq("user_id", user_id)
            .eq("status", DeliveryStatus.SENDING.value)
        )
        return bool(changed)

    async def release_deliveries(self, broadcast_id: int, user_ids: Sequence[int]) -> int:
        ids = [int(user_id) for user_id in user_ids]
        released = 0
        for start in range(0, len(ids), _IN_CHUNK):
            changed = await self._rows(
                self._table("broadcast_deliveries")
                .update({"status": DeliveryStatus.PENDING.value, "claimed_at": None})
                .eq("broadcast_id", broadcast_id)
                .eq("status", DeliveryStatus.SENDING.value)
                .in_("user_id", ids[start : start + _IN_CHUNK])
            )
            released += len(changed)
        return released

    async def recover_stuck_deliveries(
        self, broadcast_id: int, *, claimed_before: datetime
    ) -> list[int]:
        recovered = await self._rows(
            self._table("broadcast_deliveries")
            .update({"status": DeliveryStatus.INTERRUPTED.value, "finished_at": _iso(utcnow())})
            .eq("broadcast_id", broadcast_id)
            .eq("status", DeliveryStatus.SENDING.value)
            .lt("claimed_at", _iso(claimed_before))
        )
        return sorted(int(row["user_id"]) for row in recovered)

    async def set_broadcast_status(
        self, broadcast_id: int, expected: BroadcastStatus, new: BroadcastStatus
    ) -> bool:
        check_broadcast_transition(expected, new)
        changed = await self._rows(
            self._table("broadcasts")
            .update({"status": new.value})
            .eq("id", broadcast_id)
            .eq("status", expected.value)
        )
        return bool(changed)

    async def claim_broadcast_lease(
        self, broadcast_id: int, owner: str, *, now: datetime, until: datetime
    ) -> bool:
        held = await self._rows(
            self._rpc(
                "claim_broadcast_lease",
                {
                    "p_broadcast_id": broadcast_id,
                    "p_owner": owner,
                    "p_now": rows.aware(now).isoformat(),
                    "p_until": rows.aware(until).isoformat(),
                },
            )
        )
        return bool(held)

    async def release_broadcast_lease(self, broadcast_id: int, owner: str) -> None:
        await self._execute(
            self._table("broadcasts")
            .update({"lease_owner": None, "lease_until": None}, returning="minimal")
            .eq("id", broadcast_id)
            .eq("lease_owner", owner)
        )

    async def broadcast_counts(self, broadcast_id: int) -> dict[str, int]:
        counts = _object(
            await self._execute(self._rpc("broadcast_counts", {"p_broadcast_id": broadcast_id}))
        )
        return {status.value: int(counts.get(status.value, 0)) for status in DeliveryStatus}

    # price alerts ----------------------------------------------------------------------------
    async def create_alert(self, alert: NewPriceAlert, *, limit: int) -> PriceAlert | None:
        row = alert.model_dump(mode="json")
        row["next_check_at"] = _iso(alert.next_check_at)
        created = await self._rows(
            self._rpc("create_price_alert", {"p_alert": row, "p_limit": limit})
        )
        return alert_from_row(created[0]) if created else None

    async def get_alert(self, alert_id: int) -> PriceAlert | None:
        row = await self._first(self._table("price_alerts").select("*").eq("id", alert_id))
        return alert_from_row(row) if row else None

    async def list_alerts(self, user_id: int) -> list[PriceAlert]:
        found = await self._rows(
            self._table("price_alerts")
            .select("*")
            .eq("user_id", user_id)
            .neq("status", "finished")
            .order("created_at")
            .order("id")
        )
        return [alert_from_row(row) for row in found]

    async def list_due_alerts(self, now: datetime, *, limit: int) -> list[PriceAlert]:
        if limit <= 0:
            return []
        found = await self._rows(
            self._table("price_alerts")
            .select("*")
            .eq("status", "active")
            .lte("next_check_at", _iso(now))
            .order("next_check_at")
            .order("id")
            .limit(limit)
        )
        return [alert_from_row(row) for row in found]

    async def update_alert(
        self, alert_id: int, *, expected_version: int, update: AlertUpdate
    ) -> PriceAlert | None:
        columns = {
            name: _iso(value) if isinstance(value, datetime) else value
            for name, value in update.columns().items()
        }
        # The version filter makes the PATCH a compare-and-set: one statement, one winner.
        row = await self._first(
            self._table("price_alerts")
            .update({**columns, "version": expected_version + 1})
            .eq("id", alert_id)
            .eq("version", expected_version)
        )
        return alert_from_row(row) if row else None

    async def delete_alert(self, alert_id: int, user_id: int) -> bool:
        deleted = await self._rows(
            self._table("price_alerts").delete().eq("id", alert_id).eq("user_id", user_id)
        )
        return bool(deleted)

    # encryption ------------------------------------------------------------------------------
    async def reseal_travellers(self) -> int:
        changed = 0
        for table, column in (("bookings", "travellers"), ("profiles", "saved_travellers")):

            def build(table: str = table, column: str = column) -> Any:
                return self._table(table).select(f"id,{column},updated_at").order("id")

            found = await self._all_pages(build)
            for row in found:
                stored = rows.json_value(row[column])
                if all(self._sealer.is_current(t) for t in stored):
                    continue
                resealed = [self._sealer.seal(self._sealer.open(t)) for t in stored]
                # Only if nobody changed the row meanwhile (the trigger moves updated_at on
                # every update): writing over a concurrent erasure would bring the data back.
                written = await self._rows(
                    self._table(table)
                    .update({column: resealed})
                    .eq("id", row["id"])
                    .eq("updated_at", _iso(datetime.fromisoformat(row["updated_at"])))
                )
                changed += len(written)
        return changed
