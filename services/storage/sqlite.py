"""SQLite storage: the embedded default, so the bot runs with nothing but a file.

The schema mirrors supabase/migrations and is created or upgraded in ``start()``, versioned with
``PRAGMA user_version``. Each atomic operation is one conditional statement, as in PostgreSQL,
so several processes sharing the file still get exactly one winner; within a process one
connection is shared and an asyncio lock keeps coroutines from interleaving inside a
transaction. WAL lets readers in other processes carry on while one writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from services.alert_models import AlertUpdate, NewPriceAlert, PriceAlert, alert_from_row
from services.models import (
    BOOKED_STATUSES,
    LIVE_STATUSES,
    PAYMENT_TAKEN_STATUSES,
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
    BookingNotFoundError,
    Storage,
    StorageUnavailableError,
    check_broadcast_transition,
    new_reference,
)
from services.storage.sealing import Sealer

log = logging.getLogger(__name__)

_BUSY_TIMEOUT_MS = 5000

# One tuple of statements per schema version; never edit a released version, append a new one.
SCHEMA_STEPS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE profiles (
            id INTEGER PRIMARY KEY,
            username TEXT,
            first_name TEXT,
            language TEXT,
            blocked INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
            bot_blocked INTEGER NOT NULL DEFAULT 0 CHECK (bot_blocked IN (0, 1)),
            saved_travellers TEXT NOT NULL DEFAULT '[]'
                CHECK (json_valid(saved_travellers) AND json_type(saved_travellers) = 'array'),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX profiles_username_idx ON profiles (lower(username))",
        "CREATE INDEX profiles_created_at_idx ON profiles (created_at)",
        """
        CREATE TABLE bookings (
            id TEXT PRIMARY KEY,
            reference TEXT NOT NULL UNIQUE
                CHECK (length(reference) BETWEEN 6 AND 12
                       AND reference NOT GLOB '*[^23456789ABCDEFGHJKMNPQRSTUVWXYZ]*'),
            user_id INTEGER NOT NULL,
            itinerary TEXT NOT NULL CHECK (json_valid(itinerary)),
            origin TEXT NOT NULL CHECK (length(origin) = 3),
            destination TEXT NOT NULL CHECK (length(destination) = 3),
            departure_date TEXT NOT NULL,
            return_date TEXT CHECK (return_date IS NULL OR return_date >= departure_date),
            travellers TEXT NOT NULL
                CHECK (json_valid(travellers) AND json_type(travellers) = 'array'),
            amount_minor INTEGER NOT NULL CHECK (amount_minor >= 0),
            currency TEXT NOT NULL
                CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
            status TEXT NOT NULL DEFAULT 'draft' CHECK (status IN (
                'draft', 'awaiting_payment', 'paid', 'confirmed', 'expired', 'failed',
                'cancelled', 'refunded'
            )),
            checkout_session_id TEXT UNIQUE,
            payment_intent_id TEXT,
            payment_deadline TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX bookings_user_created_idx ON bookings (user_id, created_at DESC)",
        "CREATE INDEX bookings_status_created_idx ON bookings (status, created_at DESC)",
        "CREATE INDEX bookings_created_at_idx ON bookings (created_at)",
        """
        CREATE TABLE flight_searches (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER,
            origin TEXT NOT NULL,
            destination TEXT NOT NULL,
            departure TEXT NOT NULL,
            return_date TEXT,
            passengers INTEGER NOT NULL DEFAULT 1 CHECK (passengers BETWEEN 1 AND 9),
            results INTEGER NOT NULL DEFAULT 0 CHECK (results >= 0),
            cached INTEGER NOT NULL DEFAULT 0 CHECK (cached IN (0, 1)),
            chosen_at TEXT,
            reviewed_at TEXT,
            created_at TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX flight_searches_created_at_idx ON flight_searches (created_at)",
        """
        CREATE TABLE payment_events (
            event_id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            booking_id TEXT,
            received_at TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX payment_events_booking_idx ON payment_events (booking_id, received_at)",
        """
        CREATE TABLE admin_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            admin_id INTEGER NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            details TEXT NOT NULL DEFAULT '{}'
                CHECK (json_valid(details) AND json_type(details) = 'object'),
            created_at TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX admin_audit_created_at_idx ON admin_audit (created_at DESC)",
    ),
    (
        """
        CREATE TABLE broadcasts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            admin_id INTEGER NOT NULL,
            text TEXT NOT NULL CHECK (length(text) > 0),
            status TEXT NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'cancelled', 'done')),
            total INTEGER NOT NULL CHECK (total >= 0),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX broadcasts_running_idx ON broadcasts (created_at) WHERE status = 'running'",
        """
        CREATE TABLE broadcast_deliveries (
            broadcast_id INTEGER NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
            user_id INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN (
                'pending', 'sending', 'sent', 'failed', 'bot_blocked', 'interrupted'
            )),
            claimed_at TEXT,
            finished_at TEXT,
            PRIMARY KEY (broadcast_id, user_id)
        ) STRICT, WITHOUT ROWID
        """,
        """
        CREATE INDEX broadcast_deliveries_pending_idx
            ON broadcast_deliveries (broadcast_id, user_id) WHERE status = 'pending'
        """,
    ),
    (
        "ALTER TABLE broadcasts ADD COLUMN lease_owner TEXT",
        "ALTER TABLE broadcasts ADD COLUMN lease_until TEXT",
    ),
    (  # 20261202000300_retention.sql
        "CREATE INDEX admin_audit_denied_created_idx ON admin_audit (created_at) "
        "WHERE action = 'denied'",
        "CREATE INDEX payment_events_received_at_idx ON payment_events (received_at)",
    ),
    (  # 20261202000400_refunds
        "ALTER TABLE bookings ADD COLUMN refunded_minor INTEGER NOT NULL DEFAULT 0 "
        "CHECK (refunded_minor >= 0)",
        "ALTER TABLE bookings ADD COLUMN refund_pending_minor INTEGER NOT NULL DEFAULT 0 "
        "CHECK (refund_pending_minor >= 0 "
        "AND refunded_minor + refund_pending_minor <= amount_minor)",
        "ALTER TABLE bookings ADD COLUMN refund_attempts INTEGER NOT NULL DEFAULT 0 "
        "CHECK (refund_attempts >= 0)",
        "ALTER TABLE bookings ADD COLUMN checkout_renewals INTEGER NOT NULL DEFAULT 0 "
        "CHECK (checkout_renewals >= 0)",
        "ALTER TABLE bookings ADD COLUMN erase_after TEXT",
        "CREATE INDEX bookings_erase_after_idx ON bookings (erase_after) "
        "WHERE erase_after IS NOT NULL",
    ),
    (  # supabase/migrations/20261202000800_provider_orders.sql
        "ALTER TABLE bookings ADD COLUMN provider_order_id TEXT",
        "ALTER TABLE bookings ADD COLUMN provider_order_token TEXT",
        "ALTER TABLE bookings ADD COLUMN airline_reference TEXT",
        """
        ALTER TABLE bookings ADD COLUMN ticket_numbers TEXT NOT NULL DEFAULT '[]'
            CHECK (json_valid(ticket_numbers) AND json_type(ticket_numbers) = 'array')
        """,
        """
        CREATE UNIQUE INDEX bookings_provider_order_idx ON bookings (provider_order_id)
            WHERE provider_order_id IS NOT NULL
        """,
    ),
    # supabase/migrations/20261202000100_payment_ledger.sql: events are applied only once their
    # effects are done; every session a booking had; who tickets a paid booking, and its journal.
    (
        "ALTER TABLE payment_events ADD COLUMN applied_at TEXT",
        "UPDATE payment_events SET applied_at = received_at",
        """
        CREATE TABLE checkout_sessions (
            session_id TEXT PRIMARY KEY,
            booking_id TEXT NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
            created_at TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX checkout_sessions_booking_idx ON checkout_sessions (booking_id)",
        """
        INSERT INTO checkout_sessions (session_id, booking_id, created_at)
            SELECT checkout_session_id, id, updated_at FROM bookings
            WHERE checkout_session_id IS NOT NULL
        """,
        """
        CREATE TABLE fulfilments (
            booking_id TEXT PRIMARY KEY REFERENCES bookings (id) ON DELETE CASCADE,
            lease_owner TEXT,
            lease_until TEXT,
            provider_order TEXT,
            provider_booking_id TEXT,
            updated_at TEXT NOT NULL
        ) STRICT
        """,
        # Paid bookings may be waiting for a person: reconciliation must not ticket them again.
        """
        INSERT INTO fulfilments (booking_id, lease_owner, lease_until, updated_at)
            SELECT id, 'before-reconciliation', '9999-12-31T00:00:00.000000+00:00', updated_at
            FROM bookings WHERE status = 'paid'
        """,
    ),
    (  # supabase/migrations/20261202000900_refund_claims.sql
        "CREATE INDEX bookings_refund_claims_idx ON bookings (updated_at) "
        "WHERE refund_pending_minor > 0",
    ),
    (  # supabase/migrations/20261204000100_price_alerts.sql
        """
        CREATE TABLE price_alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL,
            query TEXT NOT NULL CHECK (json_valid(query) AND json_type(query) = 'object'),
            origin TEXT NOT NULL,
            destination TEXT NOT NULL,
            departure TEXT NOT NULL,
            currency TEXT NOT NULL CHECK (length(currency) = 3),
            target_minor INTEGER CHECK (target_minor > 0),
            lowest_minor INTEGER CHECK (lowest_minor >= 0),
            last_notified_minor INTEGER CHECK (last_notified_minor >= 0),
            status TEXT NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'paused', 'finished')),
            next_check_at TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT
        """,
        "CREATE INDEX price_alerts_user_idx ON price_alerts (user_id, created_at)",
        "CREATE INDEX price_alerts_due_idx ON price_alerts (next_check_at, id) "
        "WHERE status = 'active'",
    ),
    (  # supabase/migrations/20261204000200_reminders.sql
        "ALTER TABLE profiles ADD COLUMN reminders INTEGER NOT NULL DEFAULT 1 "
        "CHECK (reminders IN (0, 1))",
        "ALTER TABLE bookings ADD COLUMN departs_at TEXT",
        # The first outbound segment's departure in UTC, in _ts's fixed width (SQLite's date
        # functions read the offset and convert).
        """
        UPDATE bookings SET departs_at = (
            SELECT strftime('%Y-%m-%dT%H:%M:%S', json_extract(s.value, '$.departure'))
                   || '.000000+00:00'
            FROM json_each(bookings.itinerary, '$.segments') AS s
            WHERE NOT coalesce(json_extract(s.value, '$.inbound'), 0)
            ORDER BY s.key LIMIT 1
        )
        """,
        "CREATE INDEX bookings_departs_at_idx ON bookings (departs_at)",
        "ALTER TABLE bookings ADD COLUMN returns_at TEXT",
        # The first inbound segment's (the flight home of a round trip; NULL for one-way).
        """
        UPDATE bookings SET returns_at = (
            SELECT strftime('%Y-%m-%dT%H:%M:%S', json_extract(s.value, '$.departure'))
                   || '.000000+00:00'
            FROM json_each(bookings.itinerary, '$.segments') AS s
            WHERE coalesce(json_extract(s.value, '$.inbound'), 0)
            ORDER BY s.key LIMIT 1
        )
        """,
        "CREATE INDEX bookings_returns_at_idx ON bookings (returns_at)",
        """
        CREATE TABLE booking_reminders (
            booking_id TEXT NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
            kind TEXT NOT NULL
                CHECK (kind IN ('checkin', 'departure', 'return_checkin', 'return_departure')),
            status TEXT NOT NULL DEFAULT 'sending'
                CHECK (status IN ('sending', 'sent', 'skipped', 'bot_blocked', 'failed')),
            claimed_at TEXT NOT NULL,
            finished_at TEXT,
            PRIMARY KEY (booking_id, kind)
        ) STRICT, WITHOUT ROWID
        """,
    ),
)
SCHEMA_VERSION = len(SCHEMA_STEPS)


def _ts(moment: datetime) -> str:
    """Fixed-width UTC text, so comparing strings compares instants."""
    return rows.aware(moment).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _now() -> str:
    return _ts(utcnow())


class SQLiteStorage(Storage):
    """Storage in one SQLite file (``SQLITE_PATH``)."""

    name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        references: Callable[[], str] = new_reference,
        encryption_keys: Sequence[str] = (),
    ) -> None:
        """``references`` draws booking references (replaceable to exercise collisions);
        travellers' documents are encrypted with ``encryption_keys`` (``DATA_ENCRYPTION_KEYS``)
        or, without them, the key file beside the database, made on first start."""
        self._path = Path(path)
        self._references = references
        self._encryption_keys = tuple(encryption_keys)
        self._opened_sealer: Sealer | None = None
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def _sealer(self) -> Sealer:
        if self._opened_sealer is None:
            raise StorageUnavailableError("SQLite storage is not started")
        return self._opened_sealer

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the file (creating its folder), switch to WAL and bring the schema up to date."""
        if self._db is not None:
            return
        in_memory = str(self._path) == ":memory:"
        try:
            if not in_memory:
                self._path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self._path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailableError(f"cannot open SQLite file {self._path}: {exc}") from exc
        db.row_factory = sqlite3.Row
        try:
            self._opened_sealer = Sealer.for_sqlite(self._path, self._encryption_keys)
        except OSError as exc:
            await db.close()
            raise StorageUnavailableError(
                f"cannot use the key file of {self._path}: {exc}"
            ) from exc
        except BaseException:
            await db.close()
            raise
        try:
            await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if not in_memory:
                cursor = await db.execute("PRAGMA journal_mode = WAL")
                self._check_wal(await cursor.fetchone())
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            # Deleted and overwritten content is zeroed, not left in free space: erased
            # travellers must not be recoverable from the file.
            await db.execute("PRAGMA secure_delete = ON")
            await self._migrate(db)
        except sqlite3.Error as exc:
            await db.close()
            raise StorageUnavailableError(f"cannot use SQLite file {self._path}: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        # The version is read inside the write transaction, so two processes starting at once
        # cannot both apply the same step.
        await db.execute("BEGIN IMMEDIATE")
        try:
            cursor = await db.execute("PRAGMA user_version")
            row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            self._check_version(version)
            for step in SCHEMA_STEPS[version:]:
                for statement in step:
                    await db.execute(statement)
            if version != SCHEMA_VERSION:
                await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                log.info(
                    "SQLite schema at %s upgraded %d -> %d", self._path, version, SCHEMA_VERSION
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    def _check_wal(self, mode: sqlite3.Row | None) -> None:
        if mode is None or str(mode[0]).lower() != "wal":
            raise StorageUnavailableError(f"SQLite file {self._path} refused WAL mode")

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StorageUnavailableError(
                f"SQLite file {self._path} has schema version {version}, newer than this "
                f"code knows ({SCHEMA_VERSION}); upgrade the bot"
            )

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                await db.close()

    async def ping(self) -> None:
        async with self._connection() as db:
            await db.execute("SELECT 1")

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._db is None:
            raise StorageUnavailableError("SQLite storage is not started")
        async with self._lock:
            try:
                yield self._db
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"the database refused the change: {exc}") from exc
            except sqlite3.Error as exc:
                raise StorageUnavailableError(f"SQLite error: {exc}") from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._connection() as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    # Each statement runs and yields its rows in one trip to aiosqlite's thread: a trip costs
    # more CPU than the statement itself (thread wake-up, GIL hand-over, loop wake-up), and an
    # ``execute`` then ``fetchone`` took two.
    async def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        found = await self._all(sql, params)
        return found[0] if found else None

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self._connection() as db:
            return [dict(row) for row in await db.execute_fetchall(sql, params)]

    async def _changes(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._connection() as db:
            cursor = await db.execute(sql, params)
            return int(cursor.rowcount)

    # profiles --------------------------------------------------------------------------------
    async def upsert_profile(
        self,
        user_id: int,
        *,
        username: str | None = None,
        first_name: str | None = None,
        language: str | None = None,
    ) -> Profile:
        now = _now()
        row = await self._one(
            """
            INSERT INTO profiles (id, username, first_name, language, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                username = excluded.username,
                first_name = excluded.first_name,
                language = coalesce(excluded.language, profiles.language),
                updated_at = excluded.updated_at
            RETURNING *
            """,
            (user_id, username, first_name, language, now, now),
        )
        assert row is not None  # RETURNING always yields the row
        return rows.profile_from_row(row, sealer=self._sealer)

    async def get_profile(self, user_id: int) -> Profile | None:
        row = await self._one("SELECT * FROM profiles WHERE id = ?", (user_id,))
        return rows.profile_from_row(row, sealer=self._sealer) if row else None

    async def find_profile_by_username(self, username: str) -> Profile | None:
        name = rows.normalise_username(username)
        if name is None:
            return None
        row = await self._one(
            "SELECT * FROM profiles WHERE lower(username) = lower(?) "
            "ORDER BY updated_at DESC LIMIT 1",
            (name,),
        )
        return rows.profile_from_row(row, sealer=self._sealer) if row else None

    async def set_blocked(self, user_id: int, blocked: bool) -> bool:
        changed = await self._changes(
            "UPDATE profiles SET blocked = ?, updated_at = ? WHERE id = ?",
            (int(blocked), _now(), user_id),
        )
        return changed == 1

    async def set_bot_blocked(self, user_id: int, bot_blocked: bool) -> None:
        now = _now()
        await self._changes(
            """
            INSERT INTO profiles (id, bot_blocked, created_at, updated_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                bot_blocked = excluded.bot_blocked, updated_at = excluded.updated_at
            """,
            (user_id, int(bot_blocked), now, now),
        )

    async def save_travellers(self, user_id: int, travellers: tuple[Traveller, ...]) -> None:
        now = _now()
        await self._changes(
            """
            INSERT INTO profiles (id, saved_travellers, created_at, updated_at)
            VALUES (?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                saved_travellers = excluded.saved_travellers, updated_at = excluded.updated_at
            """,
            (
                user_id,
                json.dumps(rows.travellers_to_json(travellers, sealer=self._sealer)),
                now,
                now,
            ),
        )

    async def set_reminders(self, user_id: int, on: bool) -> Profile:
        now = _now()
        row = await self._one(
            """
            INSERT INTO profiles (id, reminders, created_at, updated_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                reminders = excluded.reminders, updated_at = excluded.updated_at
            RETURNING *
            """,
            (user_id, int(on), now, now),
        )
        assert row is not None
        return rows.profile_from_row(row, sealer=self._sealer)

    async def list_recipient_ids(self) -> list[int]:
        found = await self._all(
            "SELECT id FROM profiles WHERE blocked = 0 AND bot_blocked = 0 ORDER BY id"
        )
        return [int(row["id"]) for row in found]

    async def delete_user_data(self, user_id: int) -> int:
        now = _now()
        async with self._transaction() as db:
            await db.execute("DELETE FROM profiles WHERE id = ?", (user_id,))
            cursor = await db.execute(
                "SELECT id, travellers FROM bookings WHERE user_id = ? AND erase_after IS NULL",
                (user_id,),
            )
            owned = list(await cursor.fetchall())
            for booking in owned:
                erased = [rows.erase_traveller(t) for t in json.loads(booking["travellers"])]
                await db.execute(
                    "UPDATE bookings SET travellers = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(erased), now, booking["id"]),
                )
            await db.execute(
                "UPDATE flight_searches SET user_id = NULL WHERE user_id = ?", (user_id,)
            )
            await db.execute("DELETE FROM price_alerts WHERE user_id = ?", (user_id,))
        return len(owned)

    # bookings --------------------------------------------------------------------------------
    async def create_booking(self, booking: NewBooking) -> Booking:
        for _ in range(REFERENCE_ATTEMPTS):
            row = rows.booking_row(
                booking,
                booking_id=rows.new_booking_id(),
                reference=self._references(),
                sealer=self._sealer,
            )
            now = _now()
            returns = booking.itinerary.return_departure
            values = {
                **row,
                "itinerary": json.dumps(row["itinerary"]),
                "travellers": json.dumps(row["travellers"]),
                "payment_deadline": (
                    _ts(booking.payment_deadline) if booking.payment_deadline else None
                ),
                "departs_at": _ts(booking.itinerary.departure),
                "returns_at": _ts(returns) if returns else None,
                "created_at": now,
                "updated_at": now,
            }
            columns = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            try:
                stored = await self._one(
                    f"INSERT INTO bookings ({columns}) VALUES ({marks}) RETURNING *",  # noqa: S608 - column names are ours
                    tuple(values.values()),
                )
            except ValueError as exc:
                if "bookings.reference" in str(exc):
                    continue  # the rare collision: draw another reference
                raise
            assert stored is not None
            return rows.booking_from_row(stored, sealer=self._sealer)
        raise StorageUnavailableError("no free booking reference found; try again")

    async def get_booking(self, booking_id: str) -> Booking | None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return None
        row = await self._one("SELECT * FROM bookings WHERE id = ?", (canonical,))
        return rows.booking_from_row(row, sealer=self._sealer) if row else None

    async def get_booking_by_reference(
        self, reference: str, *, user_id: int | None
    ) -> Booking | None:
        normalised = rows.normalise_reference(reference)
        if normalised is None:
            return None
        if user_id is None:
            row = await self._one("SELECT * FROM bookings WHERE reference = ?", (normalised,))
        else:
            row = await self._one(
                "SELECT * FROM bookings WHERE reference = ? AND user_id = ?",
                (normalised, user_id),
            )
        return rows.booking_from_row(row, sealer=self._sealer) if row else None

    async def get_booking_by_session(self, checkout_session_id: str) -> Booking | None:
        row = await self._one(
            "SELECT * FROM bookings WHERE checkout_session_id = ?", (checkout_session_id,)
        )
        return rows.booking_from_row(row, sealer=self._sealer) if row else None

    async def list_bookings(self, user_id: int, *, limit: int = 20) -> list[Booking]:
        if limit <= 0:
            return []
        found = await self._all(
            "SELECT * FROM bookings WHERE user_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (user_id, limit),
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def attach_checkout(
        self, booking_id: str, *, checkout_session_id: str, payment_deadline: datetime
    ) -> Booking:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        try:
            async with self._transaction() as db:
                found = list(
                    await db.execute_fetchall(
                        "UPDATE bookings SET checkout_session_id = ?, payment_deadline = ?, "
                        "updated_at = ? WHERE id = ? RETURNING *",
                        (checkout_session_id, _ts(payment_deadline), _now(), canonical),
                    )
                )
                row = dict(found[0]) if found else None
                if row is not None:
                    # Every session the booking ever had: see list_checkout_sessions.
                    await db.execute(
                        "INSERT INTO checkout_sessions (session_id, booking_id, created_at) "
                        "VALUES (?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
                        (checkout_session_id, canonical, _now()),
                    )
        except ValueError as exc:
            raise ValueError("that checkout session belongs to another booking") from exc
        if row is None:
            raise BookingNotFoundError(booking_id)
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
        if "ticket_numbers" in update:
            update["ticket_numbers"] = json.dumps(update["ticket_numbers"])
        assignments = "".join(f"{column} = ?, " for column in update)
        try:
            row = await self._one(
                f"UPDATE bookings SET {assignments}updated_at = ? WHERE id = ? RETURNING *",  # noqa: S608 - fixed column names
                (*update.values(), _now(), canonical),
            )
        except ValueError as exc:
            raise ValueError("that provider order belongs to another booking") from exc
        if row is None:
            raise BookingNotFoundError(booking_id)
        return rows.booking_from_row(row, sealer=self._sealer)

    async def get_booking_by_provider_order(self, order_id: str) -> Booking | None:
        row = await self._one("SELECT * FROM bookings WHERE provider_order_id = ?", (order_id,))
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
        changed = await self._changes(
            "UPDATE bookings SET status = ?, "
            "payment_intent_id = coalesce(?, payment_intent_id), updated_at = ? "
            "WHERE id = ? AND status = ?",
            (new.value, payment_intent_id, _now(), canonical, expected.value),
        )
        if changed == 1:
            return True
        if await self._one("SELECT 1 FROM bookings WHERE id = ?", (canonical,)) is None:
            raise BookingNotFoundError(booking_id)
        return False

    async def reserve_refund(self, booking_id: str, amount_minor: int) -> int | None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None or amount_minor <= 0:
            return None
        row = await self._one(
            "UPDATE bookings SET refund_pending_minor = refund_pending_minor + ?, "
            "refund_attempts = refund_attempts + 1, updated_at = ? "
            "WHERE id = ? AND refunded_minor + refund_pending_minor + ? <= amount_minor "
            "RETURNING refund_attempts",
            (amount_minor, _now(), canonical, amount_minor),
        )
        return int(row["refund_attempts"]) if row else None

    async def settle_refund(self, booking_id: str, amount_minor: int, *, sent: bool) -> None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        await self._changes(
            "UPDATE bookings SET refund_pending_minor = refund_pending_minor - ?, "
            "refunded_minor = refunded_minor + ?, updated_at = ? "
            "WHERE id = ? AND refund_pending_minor >= ?",
            (amount_minor, amount_minor if sent else 0, _now(), canonical, amount_minor),
        )

    async def list_stale_refund_claims(
        self, updated_before: datetime, *, limit: int = 100
    ) -> list[Booking]:
        found = await self._all(
            "SELECT * FROM bookings WHERE refund_pending_minor > 0 AND updated_at < ? "
            "ORDER BY updated_at, rowid LIMIT ?",
            (_ts(updated_before), limit),
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def resolve_refund_claim(
        self, booking_id: str, *, expected_refunded: int, expected_pending: int, refunded: int
    ) -> bool:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        changed = await self._changes(
            "UPDATE bookings SET refunded_minor = ?, refund_pending_minor = 0, updated_at = ? "
            "WHERE id = ? AND refunded_minor = ? AND refund_pending_minor = ? "
            "AND refund_pending_minor > 0",
            (refunded, _now(), canonical, expected_refunded, expected_pending),
        )
        return changed > 0

    async def claim_checkout_renewal(self, booking_id: str, limit: int) -> int | None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        row = await self._one(
            "UPDATE bookings SET checkout_renewals = checkout_renewals + 1, updated_at = ? "
            "WHERE id = ? AND checkout_renewals < ? RETURNING checkout_renewals",
            (_now(), canonical, limit),
        )
        return int(row["checkout_renewals"]) if row else None

    async def hold_booking_data(self, booking_id: str, until: datetime) -> None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        await self._changes(
            "UPDATE bookings SET erase_after = ?, updated_at = ? WHERE id = ?",
            (_ts(until), _now(), canonical),
        )

    async def erase_held_bookings(self, now: datetime) -> int:
        stamp = _now()
        async with self._transaction() as db:
            cursor = await db.execute(
                "SELECT id, travellers FROM bookings WHERE erase_after IS NOT NULL "
                "AND (erase_after <= ? OR status NOT IN (?, ?))",
                (_ts(now), BookingStatus.PAID.value, BookingStatus.CONFIRMED.value),
            )
            due = list(await cursor.fetchall())
            for booking in due:
                erased = [rows.erase_traveller(t) for t in json.loads(booking["travellers"])]
                await db.execute(
                    "UPDATE bookings SET travellers = ?, erase_after = NULL, updated_at = ? "
                    "WHERE id = ?",
                    (json.dumps(erased), stamp, booking["id"]),
                )
        return len(due)

    async def list_bookings_by_status(
        self, status: BookingStatus, *, user_id: int | None = None
    ) -> list[Booking]:
        if user_id is None:
            found = await self._all(
                "SELECT * FROM bookings WHERE status = ? ORDER BY created_at DESC, rowid DESC",
                (status.value,),
            )
        else:
            found = await self._all(
                "SELECT * FROM bookings WHERE status = ? AND user_id = ? "
                "ORDER BY created_at DESC, rowid DESC",
                (status.value, user_id),
            )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def list_overdue(self, now: datetime, *, limit: int = 100) -> list[Booking]:
        found = await self._all(
            "SELECT * FROM bookings WHERE status = ? AND payment_deadline < ? "
            "ORDER BY payment_deadline, rowid LIMIT ?",
            (BookingStatus.AWAITING_PAYMENT.value, _ts(now), limit),
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
        column = rows.reminder_column(kind)  # departs_at or returns_at: ours, never input
        if limit <= 0:
            return []
        # The departure index, named: without statistics SQLite's planner would rather walk
        # the status index, every confirmed booking there is (benchmarks/reminders.py).
        found = await self._all(
            f"""
            SELECT b.* FROM bookings AS b INDEXED BY bookings_{column}_idx
            JOIN profiles AS p ON p.id = b.user_id
            WHERE b.{column} > ? AND b.{column} <= ? AND b.status IN (?, ?)
              AND p.reminders = 1 AND p.blocked = 0 AND p.bot_blocked = 0
              AND NOT EXISTS (SELECT 1 FROM booking_reminders AS r
                              WHERE r.booking_id = b.id AND r.kind = ?)
            ORDER BY b.{column}, b.id LIMIT ? OFFSET ?
            """,  # noqa: S608 - the column is one of two names of ours
            (
                _ts(departs_after),
                _ts(departs_until),
                *(s.value for s in BOOKED_STATUSES),
                kind,
                limit,
                max(offset, 0),
            ),
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def claim_reminder(self, booking_id: str, kind: str) -> bool:
        rows.check_reminder_kind(kind)
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        try:
            changed = await self._changes(
                "INSERT INTO booking_reminders (booking_id, kind, claimed_at) VALUES (?, ?, ?) "
                "ON CONFLICT (booking_id, kind) DO NOTHING",
                (canonical, kind, _now()),
            )
        except ValueError as exc:  # the foreign key: no such booking
            raise BookingNotFoundError(booking_id) from exc
        return changed == 1

    async def finish_reminder(self, booking_id: str, kind: str, outcome: str) -> bool:
        rows.check_reminder_outcome(outcome)
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return False
        changed = await self._changes(
            "UPDATE booking_reminders SET status = ?, finished_at = ? "
            "WHERE booking_id = ? AND kind = ? AND status = 'sending'",
            (outcome, _now(), canonical, kind),
        )
        return changed == 1

    # payment events --------------------------------------------------------------------------
    async def record_payment_event(
        self, event_id: str, event_type: str, booking_id: str | None = None
    ) -> bool:
        canonical = rows.event_booking_id(booking_id)
        now = _now()
        changed = await self._changes(
            "INSERT INTO payment_events (event_id, type, booking_id, received_at, applied_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            (event_id, event_type, canonical, now, now),
        )
        return changed == 1

    async def receive_payment_event(
        self, event_id: str, event_type: str, booking_id: str | None = None
    ) -> bool:
        canonical = rows.event_booking_id(booking_id)
        await self._changes(
            "INSERT INTO payment_events (event_id, type, booking_id, received_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            (event_id, event_type, canonical, _now()),
        )
        row = await self._one(
            "SELECT applied_at FROM payment_events WHERE event_id = ?", (event_id,)
        )
        return row is None or row["applied_at"] is None

    async def mark_payment_event_applied(self, event_id: str) -> None:
        await self._changes(
            "UPDATE payment_events SET applied_at = ? WHERE event_id = ? AND applied_at IS NULL",
            (_now(), event_id),
        )

    async def list_checkout_sessions(self, booking_id: str) -> list[str]:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return []
        found = await self._all(
            "SELECT session_id FROM checkout_sessions WHERE booking_id = ? "
            "ORDER BY created_at, rowid",
            (canonical,),
        )
        return [str(row["session_id"]) for row in found]

    # fulfilment ------------------------------------------------------------------------------
    async def claim_fulfilment(
        self, booking_id: str, owner: str, *, now: datetime, until: datetime
    ) -> Fulfilment | None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            raise BookingNotFoundError(booking_id)
        row = await self._one(
            "INSERT INTO fulfilments AS f (booking_id, lease_owner, lease_until, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (booking_id) DO UPDATE "
            "SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until, "
            "updated_at = excluded.updated_at "
            "WHERE f.lease_owner IS NULL OR f.lease_owner = ? OR f.lease_until < ? "
            "RETURNING booking_id, provider_order, provider_booking_id",
            (canonical, owner, _ts(until), _now(), owner, _ts(now)),
        )
        return rows.fulfilment_from_row(row) if row else None

    async def release_fulfilment(self, booking_id: str, owner: str) -> None:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return
        await self._changes(
            "UPDATE fulfilments SET lease_owner = NULL, lease_until = NULL, updated_at = ? "
            "WHERE booking_id = ? AND lease_owner = ?",
            (_now(), canonical, owner),
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
        await self._changes(
            "INSERT INTO fulfilments (booking_id, provider_order, provider_booking_id, "
            "updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (booking_id) DO UPDATE SET "
            "provider_order = coalesce(excluded.provider_order, provider_order), "
            "provider_booking_id = coalesce(excluded.provider_booking_id, provider_booking_id), "
            "updated_at = excluded.updated_at",
            (canonical, provider_order, provider_booking_id, _now()),
        )

    async def list_stuck_paid(self, updated_before: datetime, *, limit: int = 100) -> list[Booking]:
        found = await self._all(
            "SELECT * FROM bookings WHERE status = ? AND updated_at < ? "
            "ORDER BY updated_at, rowid LIMIT ?",
            (BookingStatus.PAID.value, _ts(updated_before), limit),
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def list_expired_between(
        self, since: datetime, until: datetime, *, limit: int = 100
    ) -> list[Booking]:
        found = await self._all(
            "SELECT * FROM bookings WHERE status = ? AND checkout_session_id IS NOT NULL "
            "AND payment_deadline >= ? AND payment_deadline < ? "
            "ORDER BY payment_deadline, rowid LIMIT ?",
            (BookingStatus.EXPIRED.value, _ts(since), _ts(until), limit),
        )
        return [rows.booking_from_row(row, sealer=self._sealer) for row in found]

    async def list_payment_events(self, booking_id: str) -> list[tuple[str, str, datetime]]:
        canonical = rows.normalise_booking_id(booking_id)
        if canonical is None:
            return []
        found = await self._all(
            "SELECT event_id, type, received_at FROM payment_events WHERE booking_id = ? "
            "ORDER BY received_at, rowid",
            (canonical,),
        )
        return [rows.payment_event_from_row(row) for row in found]

    # search log, audit, statistics -----------------------------------------------------------
    async def log_search(self, entry: SearchLogEntry) -> int:
        row = await self._one(
            "INSERT INTO flight_searches (user_id, origin, destination, departure, return_date, "
            "passengers, results, cached, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            (
                entry.user_id,
                entry.origin,
                entry.destination,
                entry.departure.isoformat(),
                rows.iso_date(entry.return_date),
                entry.passengers,
                entry.results,
                int(entry.cached),
                _now(),
            ),
        )
        assert row is not None
        return int(row["id"])

    async def last_route(self, user_id: int) -> tuple[str, str] | None:
        row = await self._one(
            "SELECT origin, destination FROM flight_searches WHERE user_id = ? "
            "ORDER BY created_at DESC, id DESC LIMIT 1",
            (user_id,),
        )
        return (str(row["origin"]), str(row["destination"])) if row else None

    async def mark_search_stage(self, search_id: int, stage: str) -> None:
        column = rows.stage_column(stage)
        await self._changes(
            f"UPDATE flight_searches SET {column} = ? WHERE id = ? AND {column} IS NULL",  # noqa: S608 - column from a fixed set
            (_now(), search_id),
        )

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._changes(
            "INSERT INTO admin_audit (admin_id, action, target, details, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (entry.admin_id, entry.action, entry.target, json.dumps(entry.details), _now()),
        )

    async def list_audit(self, *, limit: int = 50) -> list[AuditEntry]:
        if limit <= 0:
            return []
        found = await self._all(
            "SELECT * FROM admin_audit ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
        )
        return [rows.audit_from_row(row) for row in found]

    async def delete_expired_records(
        self,
        *,
        denied_audit_before: datetime,
        payment_events_before: datetime,
        searches_before: datetime,
        limit: int = PURGE_BATCH,
    ) -> dict[str, int]:
        live = sorted(status.value for status in LIVE_STATUSES)
        marks = ", ".join("?" for _ in live)
        async with self._transaction() as db:
            audit = await db.execute(
                "DELETE FROM admin_audit WHERE id IN (SELECT id FROM admin_audit "
                "WHERE action = 'denied' AND created_at < ? ORDER BY created_at LIMIT ?)",
                (_ts(denied_audit_before), limit),
            )
            events = await db.execute(
                "DELETE FROM payment_events WHERE event_id IN ("  # noqa: S608 - only placeholders
                "SELECT e.event_id FROM payment_events AS e WHERE e.received_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM bookings AS b WHERE b.id = e.booking_id "
                f"AND b.status IN ({marks})) ORDER BY e.received_at LIMIT ?)",
                (_ts(payment_events_before), *live, limit),
            )
            searches = await db.execute(
                "DELETE FROM flight_searches WHERE id IN (SELECT id FROM flight_searches "
                "WHERE created_at < ? ORDER BY created_at LIMIT ?)",
                (_ts(searches_before), limit),
            )
            return {
                "admin_audit": int(audit.rowcount),
                "payment_events": int(events.rowcount),
                "flight_searches": int(searches.rowcount),
            }

    async def stats(self, since: datetime) -> Stats:
        start = _ts(since)
        by_status = await self._all(
            "SELECT status, count(*) AS n FROM bookings WHERE created_at >= ? GROUP BY status",
            (start,),
        )
        revenue = await self._all(
            "SELECT currency, sum(amount_minor) AS total FROM bookings "
            "WHERE created_at >= ? AND status IN (?, ?) GROUP BY currency",
            (start, *(s.value for s in BOOKED_STATUSES)),
        )
        counts = await self._one(
            "SELECT (SELECT count(*) FROM flight_searches WHERE created_at >= ?) AS searches, "
            "(SELECT count(*) FROM profiles WHERE created_at >= ?) AS new_users",
            (start, start),
        )
        assert counts is not None
        routes = await self._all(
            "SELECT origin, destination, count(*) AS count FROM flight_searches "
            "WHERE created_at >= ? GROUP BY origin, destination "
            "ORDER BY count DESC, origin, destination LIMIT ?",
            (start, rows.TOP_ROUTES),
        )
        return rows.stats_from_parts(
            rows.aware(since),
            by_status={row["status"]: row["n"] for row in by_status},
            revenue={row["currency"]: row["total"] for row in revenue},
            searches=counts["searches"],
            new_users=counts["new_users"],
            top_routes=routes,
        )

    async def funnel(self, since: datetime) -> dict[str, int]:
        start = _ts(since)
        # "paid" in the funnel: money was taken, whatever came after (PAYMENT_TAKEN_STATUSES)
        paid = tuple(s.value for s in PAYMENT_TAKEN_STATUSES)
        marks = ", ".join("?" for _ in paid)
        sql = (
            "SELECT count(*) AS search, count(chosen_at) AS chosen, "  # noqa: S608 - placeholders only
            "count(reviewed_at) AS reviewed, "
            "(SELECT count(*) FROM bookings WHERE created_at >= ? AND "
            f"(status IN ({marks}) OR (status = ? AND payment_intent_id IS NOT NULL))) "
            "AS paid FROM flight_searches WHERE created_at >= ?"
        )
        row = await self._one(sql, (start, *paid, BookingStatus.CANCELLED.value, start))
        assert row is not None
        return {stage: int(row[stage]) for stage in FUNNEL_STAGES}

    # broadcasts ------------------------------------------------------------------------------
    async def create_broadcast(
        self, admin_id: int, text: str, recipient_ids: Sequence[int]
    ) -> Broadcast:
        if not text:
            raise ValueError("a broadcast needs a text")
        recipients = list(dict.fromkeys(recipient_ids))
        now = _now()
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT INTO broadcasts (admin_id, text, status, total, created_at, updated_at) "
                "VALUES (?, ?, 'running', ?, ?, ?) RETURNING *",
                (admin_id, text, len(recipients), now, now),
            )
            row = await cursor.fetchone()
            assert row is not None
            await db.executemany(
                "INSERT INTO broadcast_deliveries (broadcast_id, user_id) VALUES (?, ?)",
                [(row["id"], user_id) for user_id in recipients],
            )
        return rows.broadcast_from_row(dict(row))

    async def get_broadcast(self, broadcast_id: int) -> Broadcast | None:
        row = await self._one("SELECT * FROM broadcasts WHERE id = ?", (broadcast_id,))
        return rows.broadcast_from_row(row) if row else None

    async def list_running_broadcasts(self) -> list[Broadcast]:
        found = await self._all(
            "SELECT * FROM broadcasts WHERE status = 'running' ORDER BY created_at, id"
        )
        return [rows.broadcast_from_row(row) for row in found]

    async def claim_deliveries(self, broadcast_id: int, limit: int) -> list[int]:
        if limit <= 0:
            return []
        claimed = await self._all(
            """
            UPDATE broadcast_deliveries SET status = 'sending', claimed_at = ?
            WHERE broadcast_id = ? AND status = 'pending'
              AND user_id IN (
                  SELECT user_id FROM broadcast_deliveries
                  WHERE broadcast_id = ? AND status = 'pending'
                  ORDER BY user_id LIMIT ?)
              AND EXISTS (SELECT 1 FROM broadcasts WHERE id = ? AND status = 'running')
            RETURNING user_id
            """,
            (_now(), broadcast_id, broadcast_id, limit, broadcast_id),
        )
        return sorted(int(row["user_id"]) for row in claimed)

    async def finish_delivery(
        self, broadcast_id: int, user_id: int, outcome: DeliveryStatus
    ) -> bool:
        rows.check_outcome(outcome)
        changed = await self._changes(
            "UPDATE broadcast_deliveries SET status = ?, finished_at = ? "
            "WHERE broadcast_id = ? AND user_id = ? AND status = 'sending'",
            (DeliveryStatus(outcome).value, _now(), broadcast_id, user_id),
        )
        return changed == 1

    async def release_deliveries(self, broadcast_id: int, user_ids: Sequence[int]) -> int:
        if not user_ids:
            return 0
        return await self._changes(
            "UPDATE broadcast_deliveries SET status = 'pending', claimed_at = NULL "
            "WHERE broadcast_id = ? AND status = 'sending' "
            "AND user_id IN (SELECT value FROM json_each(?))",
            (broadcast_id, json.dumps([int(u) for u in user_ids])),
        )

    async def recover_stuck_deliveries(
        self, broadcast_id: int, *, claimed_before: datetime
    ) -> list[int]:
        recovered = await self._all(
            "UPDATE broadcast_deliveries SET status = 'interrupted', finished_at = ? "
            "WHERE broadcast_id = ? AND status = 'sending' AND claimed_at < ? "
            "RETURNING user_id",
            (_now(), broadcast_id, _ts(claimed_before)),
        )
        return sorted(int(row["user_id"]) for row in recovered)

    async def set_broadcast_status(
        self, broadcast_id: int, expected: BroadcastStatus, new: BroadcastStatus
    ) -> bool:
        check_broadcast_transition(expected, new)
        changed = await self._changes(
            "UPDATE broadcasts SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
            (new.value, _now(), broadcast_id, expected.value),
        )
        return changed == 1

    async def claim_broadcast_lease(
        self, broadcast_id: int, owner: str, *, now: datetime, until: datetime
    ) -> bool:
        changed = await self._changes(
            "UPDATE broadcasts SET lease_owner = ?, lease_until = ? "
            "WHERE id = ? AND status = 'running' "
            "AND (lease_owner IS NULL OR lease_owner = ? OR lease_until < ?)",
            (owner, _ts(until), broadcast_id, owner, _ts(now)),
        )
        return changed == 1

    async def release_broadcast_lease(self, broadcast_id: int, owner: str) -> None:
        await self._changes(
            "UPDATE broadcasts SET lease_owner = NULL, lease_until = NULL "
            "WHERE id = ? AND lease_owner = ?",
            (broadcast_id, owner),
        )

    async def broadcast_counts(self, broadcast_id: int) -> dict[str, int]:
        found = await self._all(
            "SELECT status, count(*) AS n FROM broadcast_deliveries "
            "WHERE broadcast_id = ? GROUP BY status",
            (broadcast_id,),
        )
        counted = {row["status"]: int(row["n"]) for row in found}
        return {status.value: counted.get(status.value, 0) for status in DeliveryStatus}

    # price alerts ----------------------------------------------------------------------------
    async def create_alert(self, alert: NewPriceAlert, *, limit: int) -> PriceAlert | None:
        now = _now()
        # One statement: the count and the insert cannot be split by another writer.
        row = await self._one(
            """
            INSERT INTO price_alerts (
                user_id, query, origin, destination, departure, currency, target_minor,
                lowest_minor, status, next_check_at, version, created_at, updated_at)
            SELECT ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, 1, ?, ?
            WHERE (SELECT count(*) FROM price_alerts
                   WHERE user_id = ? AND status <> 'finished') < ?
            RETURNING *
            """,
            (
                alert.user_id,
                json.dumps(alert.query),
                alert.origin,
                alert.destination,
                alert.departure.isoformat(),
                alert.currency,
                alert.target_minor,
                alert.lowest_minor,
                _ts(alert.next_check_at),
                now,
                now,
                alert.user_id,
                limit,
            ),
        )
        return alert_from_row(row) if row else None

    async def get_alert(self, alert_id: int) -> PriceAlert | None:
        row = await self._one("SELECT * FROM price_alerts WHERE id = ?", (alert_id,))
        return alert_from_row(row) if row else None

    async def list_alerts(self, user_id: int) -> list[PriceAlert]:
        found = await self._all(
            "SELECT * FROM price_alerts WHERE user_id = ? AND status <> 'finished' "
            "ORDER BY created_at, id",
            (user_id,),
        )
        return [alert_from_row(row) for row in found]

    async def list_due_alerts(self, now: datetime, *, limit: int) -> list[PriceAlert]:
        if limit <= 0:
            return []
        found = await self._all(
            "SELECT * FROM price_alerts WHERE status = 'active' AND next_check_at <= ? "
            "ORDER BY next_check_at, id LIMIT ?",
            (_ts(now), limit),
        )
        return [alert_from_row(row) for row in found]

    async def update_alert(
        self, alert_id: int, *, expected_version: int, update: AlertUpdate
    ) -> PriceAlert | None:
        columns = {
            name: _ts(value) if isinstance(value, datetime) else value
            for name, value in update.columns().items()
        }
        assignments = "".join(f"{name} = ?, " for name in columns)
        row = await self._one(
            f"UPDATE price_alerts SET {assignments}version = version + 1, updated_at = ? "  # noqa: S608 - names are ours
            "WHERE id = ? AND version = ? RETURNING *",
            (*columns.values(), _now(), alert_id, expected_version),
        )
        return alert_from_row(row) if row else None

    async def delete_alert(self, alert_id: int, user_id: int) -> bool:
        changed = await self._changes(
            "DELETE FROM price_alerts WHERE id = ? AND user_id = ?", (alert_id, user_id)
        )
        return changed == 1

    # encryption ------------------------------------------------------------------------------
    async def reseal_travellers(self) -> int:
        sealer = self._sealer
        changed = 0
        async with self._transaction() as db:
            for table, column in (("bookings", "travellers"), ("profiles", "saved_travellers")):
                found = await db.execute_fetchall(f"SELECT id, {column} FROM {table}")  # noqa: S608 - names are ours
                for row in found:
                    stored = json.loads(row[column])
                    if all(sealer.is_current(t) for t in stored):
                        continue
                    resealed = [sealer.seal(sealer.open(t)) for t in stored]
                    await db.execute(
                        f"UPDATE {table} SET {column} = ?, updated_at = ? WHERE id = ?",  # noqa: S608
                        (json.dumps(resealed), _now(), row["id"]),
                    )
                    changed += 1
        if changed:
            # The old bytes would otherwise live on in free pages and in the WAL.
            async with self._connection() as db:
                await db.execute("VACUUM")
                await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return changed
