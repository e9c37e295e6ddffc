"""Travellers' documents and contacts are encrypted before they reach the database (issue 12.10).

Rows are read straight from the database: the SQLite file's bytes (and its WAL), and PostgreSQL
through asyncpg as a superuser, beneath PostgREST, so nothing of ours decodes them on the way.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import sys
from contextlib import closing
from datetime import date
from pathlib import Path

import pytest

from services.models import Gender, NewBooking, PassengerCategory, Traveller
from services.storage.base import Storage
from services.storage.sealing import (
    SEALED,
    Sealer,
    UnreadableTravellerError,
    key_file_for,
    new_key,
)
from services.storage.sqlite import SQLiteStorage
from services.storage.supabase import SupabaseStorage
from tests.support.supabase_stack import StorageFactory
from tests.test_storage_contract import new_booking

ROOT = Path(__file__).resolve().parent.parent

ODETE = Traveller(
    category=PassengerCategory.ADULT,
    first_name="ODETE",
    last_name="QUARESMA",
    birth_date=date(1987, 11, 23),
    gender=Gender.FEMALE,
    nationality="PT",
    passport_number="QZ8841273",
    passport_expiry=date(2033, 4, 29),
    email="odete.quaresma@example.org",
    phone="+351934567812",
)
# Everything that must never be in the database in clear, in the forms it could be stored in.
SECRETS = ("QZ8841273", "1987-11-23", "2033-04-29", "odete.quaresma", "351934567812")


def _booking() -> NewBooking:
    return new_booking(user_id=77).model_copy(update={"travellers": (ODETE,)})


async def _raw(backend: StorageFactory) -> str:
    """Every row of the tables that hold travellers, as the database holds them."""
    if backend.stack is None:
        text = ""
        for path in (backend.sqlite_path, Path(f"{backend.sqlite_path}-wal")):
            if path.exists():
                text += path.read_bytes().decode("utf-8", "replace")
        return text
    found = await backend.stack.admin.fetch(
        "select row_to_json(b)::text as row from public.bookings b "
        "union all select row_to_json(p)::text from public.profiles p"
    )
    return "\n".join(row["row"] for row in found)


async def _set_travellers_raw(backend: StorageFactory, booking_id: str, value: object) -> None:
    """Overwrite a booking's travellers behind the storage's back (a row from before)."""
    if backend.stack is None:
        with closing(sqlite3.connect(backend.sqlite_path)) as db, db:
            db.execute(
                "update bookings set travellers = ? where id = ?", (json.dumps(value), booking_id)
            )
        return
    await backend.stack.admin.execute(
        "update public.bookings set travellers = $1::jsonb where id = $2::uuid",
        json.dumps(value),
        booking_id,
    )


async def _open_with(backend: StorageFactory, keys: list[str]) -> Storage:
    """Another instance on the same database with DATA_ENCRYPTION_KEYS = ``keys``."""
    store: Storage
    if backend.stack is None:
        store = SQLiteStorage(backend.sqlite_path, encryption_keys=keys)
    else:
        store = await SupabaseStorage.create(
            backend.stack.url, backend.stack.service_key, sealer=Sealer(keys)
        )
    await store.start()
    return store


async def test_documents_and_contacts_reach_the_database_only_encrypted(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    booking = await storage.create_booking(_booking())
    await storage.save_travellers(77, (ODETE,))

    raw = await _raw(storage_factory)
    assert [value for value in SECRETS if value in raw] == []
    assert SEALED in raw
    # What stays readable by design: the name people are looked up by, category, nationality.
    assert "QUARESMA" in raw

    stored = await storage.get_booking(booking.id)
    assert stored is not None
    assert stored.travellers == (ODETE,)
    profile = await storage.get_profile(77)
    assert profile is not None
    assert profile.saved_travellers == (ODETE,)
    listed = await storage.list_bookings(77)
    assert listed[0].travellers[0].passport_number == "QZ8841273"


async def test_rows_written_in_clear_before_still_read_and_rekey_encrypts_them(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    booking = await storage.create_booking(_booking())
    legacy = ODETE.model_dump(mode="json", exclude={"passport_masked"})
    await _set_travellers_raw(storage_factory, booking.id, [legacy])
    assert "QZ8841273" in await _raw(storage_factory)

    stored = await storage.get_booking(booking.id)
    assert stored is not None
    assert stored.travellers == (ODETE,)

    assert await storage.reseal_travellers() == 1
    assert [value for value in SECRETS if value in await _raw(storage_factory)] == []
    stored = await storage.get_booking(booking.id)
    assert stored is not None
    assert stored.travellers == (ODETE,)
    assert await storage.reseal_travellers() == 0


async def test_keys_rotate_newest_first_and_rekey_retires_the_old_one(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    booking = await storage.create_booking(_booking())
    await storage.save_travellers(77, (ODETE,))
    old_keys = (
        [storage_factory.stack.data_key]
        if storage_factory.stack is not None
        else [key_file_for(storage_factory.sqlite_path).read_text().strip()]
    )
    newest = new_key()

    rotated = await _open_with(storage_factory, [newest, *old_keys])
    try:
        # Old rows read with the old key still listed; rekey moves them to the newest.
        assert (await rotated.get_booking(booking.id)).travellers == (ODETE,)  # type: ignore[union-attr]
        assert await rotated.reseal_travellers() == 2  # the booking and the saved traveller
        assert await rotated.reseal_travellers() == 0
    finally:
        await rotated.close()

    if storage_factory.stack is None:
        key_file_for(storage_factory.sqlite_path).unlink()
    only_newest = await _open_with(storage_factory, [newest])
    try:
        assert (await only_newest.get_booking(booking.id)).travellers == (ODETE,)  # type: ignore[union-attr]
        profile = await only_newest.get_profile(77)
        assert profile is not None
        assert profile.saved_travellers == (ODETE,)
    finally:
        await only_newest.close()

    stranger = await _open_with(storage_factory, [new_key()])
    try:
        with pytest.raises(UnreadableTravellerError, match="DATA_ENCRYPTION_KEYS"):
            await stranger.get_booking(booking.id)
    finally:
        await stranger.close()


async def test_erasure_leaves_no_ciphertext_behind(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    """An erased booking must not keep its ciphertext: whoever holds the key could still read
    the erased details."""
    booking = await storage.create_booking(_booking())
    before = await _raw(storage_factory)
    assert await storage.delete_user_data(77) == 1

    stored = await storage.get_booking(booking.id)
    assert stored is not None
    (erased,) = stored.travellers
    assert (erased.first_name, erased.passport_number, erased.email) == ("Erased", "", None)
    assert erased.nationality == "PT"
    if storage_factory.stack is not None:
        (row,) = await storage_factory.stack.admin.fetch(
            "select travellers from public.bookings where id = $1::uuid", booking.id
        )
        assert json.loads(row["travellers"])[0][SEALED] is None
    else:
        with closing(sqlite3.connect(storage_factory.sqlite_path)) as db, db:
            (row,) = db.execute("select travellers from bookings").fetchall()
        assert json.loads(row[0])[0][SEALED] is None
    assert SEALED in before


async def test_sqlite_keeps_its_generated_key_in_a_private_file_beside_the_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data" / "bot.sqlite3"
    first = SQLiteStorage(path)
    await first.start()
    booking = await first.create_booking(_booking())
    await first.close()

    key_file = key_file_for(path)
    assert key_file == tmp_path / "data" / "bot.sqlite3.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() not in path.read_bytes().decode("utf-8", "replace")

    again = SQLiteStorage(path)  # a restart: the same key, so the same data
    await again.start()
    try:
        stored = await again.get_booking(booking.id)
        assert stored is not None
        assert stored.travellers == (ODETE,)
    finally:
        await again.close()


async def test_two_processes_starting_at_once_share_one_key_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    script = (
        "import sys; from pathlib import Path; from services.storage.sealing import Sealer; "
        "s = Sealer.for_sqlite(Path(sys.argv[1])); print(s.seal({'phone': '+1'})['sealed'])"
    )
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            str(path),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    tokens = [(await run.communicate())[0].decode().strip() for run in runs]
    reader = Sealer.for_sqlite(path)
    assert all(reader.open({SEALED: token}) == {"phone": "+1"} for token in tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["bot.sqlite3.key"]  # noqa: ASYNC240


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE", "DATA_", "SQLITE"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


async def _cli(*args: str, cwd: Path, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=_cli_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def test_supabase_without_a_key_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    code, out = await _cli(
        "doctor",
        cwd=tmp_path,
        SUPABASE_URL="https://project.supabase.co",
        SUPABASE_SERVICE_ROLE_KEY="service-role-key",
    )
    assert code == 2
    assert out.strip().splitlines() == [
        "travelbot: setting error: DATA_ENCRYPTION_KEYS: required when SUPABASE_URL is set "
        "(make one with 'travelbot newkey')"
    ]


async def test_newkey_then_rekey_moves_a_sqlite_file_off_its_key_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "travelbot.sqlite3"
    store = SQLiteStorage(path)
    await store.start()
    booking = await store.create_booking(_booking())
    await store.close()

    code, key = await _cli("newkey", cwd=tmp_path)
    assert code == 0
    code, out = await _cli("rekey", cwd=tmp_path, DATA_ENCRYPTION_KEYS=key.strip())
    assert (code, out.strip()) == (
        0,
        "re-encrypted 1 row(s) with the newest key; older keys can now be removed",
    )
    key_file_for(path).unlink()
    store = SQLiteStorage(path, encryption_keys=[key.strip()])
    await store.start()
    try:
        stored = await store.get_booking(booking.id)
        assert stored is not None
        assert stored.travellers == (ODETE,)
    finally:
        await store.close()


def test_a_sealed_traveller_is_unreadable_without_its_key() -> None:
    sealed = Sealer([new_key()]).seal(ODETE.model_dump(mode="json"))
    with pytest.raises(UnreadableTravellerError):
        Sealer([new_key()]).open(sealed)
