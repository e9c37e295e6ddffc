"""The anon key (the one a Supabase project publishes) can neither read nor write anything.

Checked three ways against the real stack: supabase-py with the anon key, raw HTTP through the
/rest/v1 gateway (with the key and with no key at all), and PostgreSQL's own catalog, which also
catches a future table someone forgets to protect. The scratch database carries Supabase's
default grants to anon, so only our migrations stand in the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
import pytest_asyncio
from postgrest import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from services.models import AuditEntry, BookingStatus, SearchLogEntry
from services.storage.sealing import Sealer
from services.storage.supabase import SupabaseStorage
from tests.support.supabase_stack import TABLES, SupabaseStack
from tests.test_storage_contract import new_alert, new_booking, traveller

_NO_BOOKING = "00000000-0000-4000-8000-000000000000"
# A row each table would accept (so a refusal is about permission, not shape).
ROWS: dict[str, dict[str, Any]] = {
    "profiles": {"id": 2},
    "bookings": {"reference": "ABCDEF", "status": "paid"},
    "flight_searches": {"origin": "LIS"},
    "payment_events": {"event_id": "evt_2", "type": "x"},
    "admin_audit": {"admin_id": 2, "action": "x"},
    "broadcasts": {"admin_id": 2, "text": "x"},
    "broadcast_deliveries": {"broadcast_id": 1, "user_id": 2},
    "checkout_sessions": {"session_id": "cs_2", "booking_id": _NO_BOOKING},
    "fulfilments": {"booking_id": _NO_BOOKING, "lease_owner": "x"},
    "booking_reminders": {"booking_id": _NO_BOOKING, "kind": "checkin"},
    "price_alerts": {
        "user_id": 2,
        "query": {},
        "origin": "LIS",
        "destination": "BCN",
        "departure": "2030-01-01",
        "currency": "EUR",
        "next_check_at": "2030-01-01T00:00:00Z",
    },
}
FUNCTIONS: dict[str, dict[str, Any]] = {
    "find_profile_by_username": {"p_username": "ana_s"},
    "delete_user_data": {"p_user_id": 1, "p_erased": {}},
    "booking_stats": {"p_since": "2000-01-01T00:00:00Z"},
    "search_funnel": {"p_since": "2000-01-01T00:00:00Z"},
    "create_broadcast": {"p_admin_id": 1, "p_text": "x", "p_recipient_ids": [1]},
    "claim_broadcast_deliveries": {"p_broadcast_id": 1, "p_limit": 10},
    "broadcast_counts": {"p_broadcast_id": 1},
    "delete_expired_records": {
        "p_denied_audit_before": "2100-01-01T00:00:00Z",
        "p_payment_events_before": "2100-01-01T00:00:00Z",
        "p_searches_before": "2100-01-01T00:00:00Z",
        "p_live_statuses": [],
        "p_limit": 1000,
    },
    "reserve_refund": {"p_booking_id": "00000000-0000-0000-0000-000000000000", "p_amount": 1},
    "settle_refund": {
        "p_booking_id": "00000000-0000-0000-0000-000000000000",
        "p_amount": 1,
        "p_sent": True,
    },
    "claim_checkout_renewal": {
        "p_booking_id": "00000000-0000-0000-0000-000000000000",
        "p_limit": 1,
    },
    "erase_held_bookings": {"p_now": "2000-01-01T00:00:00Z", "p_erased": {}},
    "claim_fulfilment": {
        "p_booking_id": _NO_BOOKING,
        "p_owner": "x",
        "p_now": "2000-01-01T00:00:00Z",
        "p_until": "2000-01-01T00:00:00Z",
    },
    "reminder_candidates": {
        "p_kind": "checkin",
        "p_after": "2000-01-01T00:00:00Z",
        "p_until": "2100-01-01T00:00:00Z",
        "p_limit": 10,
        "p_offset": 0,
    },
    "create_price_alert": {"p_alert": {"user_id": 1}, "p_limit": 5},
}


@pytest_asyncio.fixture
async def seeded(supabase_stack: SupabaseStack) -> AsyncIterator[SupabaseStack]:
    """Every table holds at least one row, written with the service key."""
    await supabase_stack.reset()
    store = await SupabaseStorage.create(
        supabase_stack.url, supabase_stack.service_key, sealer=Sealer([supabase_stack.data_key])
    )
    try:
        await store.upsert_profile(1, username="ana_s", first_name="Ana")
        await store.save_travellers(1, (traveller(),))
        booking = await store.create_booking(new_booking(user_id=1))
        await store.transition(booking.id, BookingStatus.DRAFT, BookingStatus.AWAITING_PAYMENT)
        await store.record_payment_event("evt_1", "checkout.session.completed", booking.id)
        await store.attach_checkout(
            booking.id, checkout_session_id="cs_1", payment_deadline=booking.created_at
        )
        now = booking.created_at
        assert await store.claim_fulfilment(booking.id, "seed", now=now, until=now) is not None
        assert await store.claim_reminder(booking.id, "checkin")
        search = SearchLogEntry(
            user_id=1, origin="LIS", destination="BCN", departure=booking.departure_date
        )
        await store.log_search(search)
        await store.append_audit(AuditEntry(admin_id=9, action="block", target="1"))
        broadcast = await store.create_broadcast(9, "hello", [1])
        assert await store.claim_deliveries(broadcast.id, 1) == [1]
        assert await store.create_alert(new_alert(user_id=1), limit=5) is not None
        yield supabase_stack
    finally:
        await store.close()


async def client_for(stack: SupabaseStack, key: str) -> AsyncClient:
    return await acreate_client(
        stack.url, key, options=AsyncClientOptions(auto_refresh_token=False, persist_session=False)
    )


async def test_the_service_key_sees_every_table_that_anon_cannot(seeded: SupabaseStack) -> None:
    service = await client_for(seeded, seeded.service_key)
    try:
        for table in TABLES:
            reply = await service.table(table).select("*").execute()
            assert len(reply.data) >= 1, table  # so the anon checks below can fail
    finally:
        await service.postgrest.aclose()


@pytest.mark.parametrize("table", TABLES)
async def test_anon_reads_no_rows_through_supabase_py(seeded: SupabaseStack, table: str) -> None:
    anon = await client_for(seeded, seeded.anon_key)
    try:
        with pytest.raises(APIError) as refused:
            await anon.table(table).select("*").execute()
        assert refused.value.code == "42501"  # permission denied
    finally:
        await anon.postgrest.aclose()


@pytest.mark.parametrize("table", TABLES)
async def test_anon_cannot_write_through_supabase_py(seeded: SupabaseStack, table: str) -> None:
    anon = await client_for(seeded, seeded.anon_key)
    try:
        row = ROWS[table]
        column = next(iter(row))
        writes = [
            anon.table(table).insert(row),
            anon.table(table).upsert(row),
            anon.table(table).update(row).not_.is_(column, "null"),
            anon.table(table).delete().not_.is_(column, "null"),
        ]
        for write in writes:
            with pytest.raises(APIError) as refused:
                await write.execute()
            assert refused.value.code == "42501", (table, refused.value)
    finally:
        await anon.postgrest.aclose()
    conn = await asyncpg.connect(seeded.dsn)
    try:
        assert await conn.fetchval(f"select count(*) from {table}") >= 1
        if table == "bookings":
            assert await conn.fetchval("select status from bookings") == "awaiting_payment"
    finally:
        await conn.close()


@pytest.mark.parametrize("with_key", [True, False], ids=["anon-key", "no-key"])
async def test_raw_http_as_anon_gets_nothing(seeded: SupabaseStack, with_key: bool) -> None:
    headers = (
        {"apikey": seeded.anon_key, "Authorization": f"Bearer {seeded.anon_key}"}
        if with_key
        else {}
    )
    async with aiohttp.ClientSession(headers=headers) as http:
        for table in TABLES:
            async with http.get(f"{seeded.url}/rest/v1/{table}?select=*") as reply:
                body = await reply.json()
                assert reply.status in (401, 403), (table, reply.status, body)
                assert not isinstance(body, list)
            async with http.post(f"{seeded.url}/rest/v1/{table}", json=ROWS[table]) as reply:
                assert reply.status in (401, 403), (table, reply.status)
        for function, params in FUNCTIONS.items():
            async with http.post(f"{seeded.url}/rest/v1/rpc/{function}", json=params) as reply:
                assert reply.status in (401, 403), (function, reply.status)
                body = await reply.json()
                assert "Ana" not in str(body)


async def test_a_forged_service_key_is_refused(seeded: SupabaseStack) -> None:
    forged = seeded.sign("service_role").rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {forged}"}) as http,
        http.get(f"{seeded.url}/rest/v1/profiles") as reply,
    ):
        assert reply.status == 401


async def test_every_public_table_has_rls_and_no_anon_access(seeded: SupabaseStack) -> None:
    conn = await asyncpg.connect(seeded.dsn)
    try:
        tables = await conn.fetch(
            "select c.oid, c.relname, c.relrowsecurity from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'public' and c.relkind in ('r', 'p')"
        )
        assert {t["relname"] for t in tables} == set(TABLES)
        for table in tables:
            assert table["relrowsecurity"], table["relname"]
            for role in ("anon", "authenticated"):
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                    assert not await conn.fetchval(
                        "select has_table_privilege($1, $2::oid, $3)",
                        role,
                        table["oid"],
                        privilege,
                    ), (role, table["relname"], privilege)
        assert await conn.fetchval("select count(*) from pg_policies") == 0
        functions = await conn.fetch(
            "select p.oid, p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
            "where n.nspname = 'public'"
        )
        assert set(FUNCTIONS) <= {f["proname"] for f in functions}
        for function in functions:
            for role in ("anon", "authenticated"):
                assert not await conn.fetchval(
                    "select has_function_privilege($1, $2::oid, 'EXECUTE')", role, function["oid"]
                ), (role, function["proname"])
        sequences = await conn.fetch(
            "select c.oid, c.relname from pg_class c join pg_namespace n "
            "on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind = 'S'"
        )
        for sequence in sequences:
            assert not await conn.fetchval(
                "select has_sequence_privilege('anon', $1::oid, 'USAGE')", sequence["oid"]
            ), sequence["relname"]
    finally:
        await conn.close()
