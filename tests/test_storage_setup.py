"""Getting storage ready: PostgreSQL migrations applied once, the SQLite file created and
upgraded by itself, and a clear StorageUnavailableError when the database is not there."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
import pytest_asyncio
from aiohttp import web

from services.storage.base import StorageUnavailableError
from services.storage.migrate import MIGRATIONS_DIR, MigrationError, apply_migrations
from services.storage.sealing import Sealer, new_key
from services.storage.sqlite import SCHEMA_STEPS, SCHEMA_VERSION, SQLiteStorage
from services.storage.supabase import SupabaseStorage
from tests.support.supabase_stack import (
    create_scratch_database,
    database_dsn,
    drop_database,
    ensure_roles,
    free_port,
)
from tests.test_storage_contract import new_booking

MIGRATION_FILES = sorted(path.name for path in MIGRATIONS_DIR.glob("*.sql"))


@pytest_asyncio.fixture
async def scratch_dsn() -> AsyncIterator[str]:
    """An empty database of this test's own."""
    await ensure_roles()
    name = await create_scratch_database()
    try:
        yield database_dsn(name)
    finally:
        await drop_database(name)


# PostgreSQL migrations ---------------------------------------------------------------------------
async def test_migrations_apply_once_and_are_recorded_like_the_supabase_cli(
    scratch_dsn: str,
) -> None:
    assert len(MIGRATION_FILES) >= 2

    assert await apply_migrations(scratch_dsn) == MIGRATION_FILES
    assert await apply_migrations(scratch_dsn) == []

    conn = await asyncpg.connect(scratch_dsn)
    try:
        recorded = await conn.fetch(
            "select version, name from supabase_migrations.schema_migrations order by version"
        )
        assert [f"{r['version']}_{r['name']}.sql" for r in recorded] == MIGRATION_FILES
        assert await conn.fetchval("select to_regclass('public.bookings') is not null")
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_file_once(scratch_dsn: str) -> None:
    results = await asyncio.gather(*(apply_migrations(scratch_dsn) for _ in range(3)))

    applied = [name for result in results for name in result]
    assert sorted(applied) == MIGRATION_FILES


async def test_a_failing_migration_names_its_file_and_leaves_nothing_half_done(
    scratch_dsn: str, tmp_path: Path
) -> None:
    for name in MIGRATION_FILES:
        shutil.copy(MIGRATIONS_DIR / name, tmp_path / name)
    (tmp_path / "29990101000000_broken.sql").write_text(
        "create table public.half_done (id int);\nselect no_such_function();\n"
    )

    with pytest.raises(MigrationError, match=r"29990101000000_broken\.sql"):
        await apply_migrations(scratch_dsn, directory=tmp_path)

    conn = await asyncpg.connect(scratch_dsn)
    try:
        assert await conn.fetchval("select to_regclass('public.half_done')") is None
        versions = await conn.fetch("select version from supabase_migrations.schema_migrations")
        assert len(versions) == len(MIGRATION_FILES)  # the good ones stay applied
    finally:
        await conn.close()


async def test_migration_files_must_carry_a_timestamp(tmp_path: Path) -> None:
    (tmp_path / "initial.sql").write_text("select 1;")
    with pytest.raises(MigrationError, match=r"initial\.sql"):
        await apply_migrations("postgresql://postgres@127.0.0.1:5432/postgres", directory=tmp_path)


async def test_an_unreachable_database_is_a_clear_migration_error() -> None:
    with pytest.raises(MigrationError, match="cannot connect"):
        await apply_migrations(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")


# SQLite ------------------------------------------------------------------------------------------
async def test_sqlite_creates_its_folder_uses_wal_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "travelbot.sqlite3"
    store = SQLiteStorage(path)
    await store.start()
    await store.start()  # idempotent
    booking = await store.create_booking(new_booking())
    await store.close()

    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("pragma journal_mode").fetchone()[0] == "wal"
        assert raw.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION

    reopened = SQLiteStorage(path)
    await reopened.start()
    try:
        assert await reopened.get_booking(booking.id) == booking
    finally:
        await reopened.close()


async def test_an_older_sqlite_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as raw, raw:
        for statement in SCHEMA_STEPS[0]:
            raw.execute(statement)
        raw.execute(
            "insert into profiles (id, username, created_at, updated_at) "
            "values (1, 'ana_s', '2026-01-01T00:00:00.000000+00:00', "
            "'2026-01-01T00:00:00.000000+00:00')"
        )
        raw.execute("pragma user_version = 1")
    raw.close()

    store = SQLiteStorage(path)
    await store.start()
    try:
        profile = await store.get_profile(1)
        assert profile is not None
        assert profile.username == "ana_s"
        broadcast = await store.create_broadcast(9, "hello", [1])
        assert broadcast.total == 1
    finally:
        await store.close()


async def test_a_newer_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    with closing(sqlite3.connect(path)) as raw, raw:
        raw.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    raw.close()

    with pytest.raises(StorageUnavailableError, match="newer than this code"):
        await SQLiteStorage(path).start()


async def test_sqlite_that_cannot_open_its_file_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    with pytest.raises(StorageUnavailableError, match="cannot open"):
        await SQLiteStorage(blocker / "travelbot.sqlite3").start()
    with pytest.raises(StorageUnavailableError, match="not started"):
        await SQLiteStorage(tmp_path / "x.sqlite3").get_profile(1)


# Supabase ----------------------------------------------------------------------------------------
async def test_supabase_that_does_not_answer_is_unavailable() -> None:
    store = await SupabaseStorage.create(
        f"http://127.0.0.1:{free_port()}", "key", sealer=Sealer([new_key()]), request_timeout=2
    )
    try:
        with pytest.raises(StorageUnavailableError, match="did not answer"):
            await store.start()
        with pytest.raises(StorageUnavailableError):
            await store.create_booking(new_booking())
    finally:
        await store.close()
    with pytest.raises(StorageUnavailableError, match="closed"):
        await store.get_profile(1)


@pytest_asyncio.fixture
async def misbehaving_gateway() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A gateway that takes connections and then, as ``mode["now"]`` says, never answers
    ("stall") or hangs up ("drop")."""
    mode = {"now": "stall"}

    async def handle(request: web.Request) -> web.StreamResponse:
        if mode["now"] == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        await asyncio.sleep(30)
        return web.json_response([])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", mode
    await runner.cleanup()


async def test_supabase_that_stalls_or_hangs_up_is_unavailable(
    misbehaving_gateway: tuple[str, dict[str, str]],
) -> None:
    """Within the request timeout, and as the storage's own error, whatever the transport
    underneath raised."""
    url, mode = misbehaving_gateway
    store = await SupabaseStorage.create(
        url, "key", sealer=Sealer([new_key()]), request_timeout=0.3
    )
    try:
        with pytest.raises(StorageUnavailableError, match="did not answer"):
            await store.get_profile(1)
        mode["now"] = "drop"
        with pytest.raises(StorageUnavailableError, match="did not answer"):
            await store.create_booking(new_booking())
    finally:
        await store.close()
