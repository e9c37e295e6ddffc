"""``travelbot migrate`` for PostgreSQL: apply supabase/migrations in order, each exactly once.

Applied files are recorded in ``supabase_migrations.schema_migrations``, the table the Supabase
CLI keeps, so ``supabase db push`` and this command agree on what is done. Each file runs in its
own transaction together with its record; a session advisory lock makes concurrent runs wait
for each other instead of racing. For SQLite there is nothing to do beyond
``SQLiteStorage(path).start()``, which migrates the file itself.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]

log = logging.getLogger(__name__)

# An installed wheel carries the files beside this module (pyproject's force-include); a
# checkout (or an editable install) reads them where the Supabase CLI keeps them.
_PACKAGED = Path(__file__).resolve().with_name("migrations")
_CHECKOUT = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
MIGRATIONS_DIR = _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT

# Any constant works; it only has to be the same for every migrator of this database.
_LOCK_KEY = 0x7472_6176_656C  # "travel"
_FILE_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[A-Za-z0-9_]+)\.sql$")

_LEDGER = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
    version text primary key,
    statements text[],
    name text
);
"""


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names the file and the database's reason."""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The migration files in the order they apply (by their timestamp prefix)."""
    if not directory.is_dir():
        raise MigrationError(f"no migrations folder at {directory}")
    files = sorted(directory.glob("*.sql"))
    for path in files:
        if not _FILE_NAME.match(path.name):
            raise MigrationError(f"{path.name}: expected <14-digit timestamp>_<name>.sql")
    return files


async def apply_migrations(dsn: str, *, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded; returns the file names applied (empty when the
    database was already up to date). PostgREST is told to reload its schema cache after."""
    files = migration_files(directory)
    try:
        connection = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise MigrationError(f"cannot connect to the database: {exc}") from exc
    applied: list[str] = []
    try:
        await connection.execute("select pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await connection.execute(_LEDGER)
            done = {
                record["version"]
                for record in await connection.fetch(
                    "select version from supabase_migrations.schema_migrations"
                )
            }
            for path in files:
                match = _FILE_NAME.match(path.name)
                assert match is not None  # checked by migration_files
                if match["version"] in done:
                    continue
                sql = path.read_text(encoding="utf-8")
                try:
                    async with connection.transaction():
                        await connection.execute(sql)
                        await connection.execute(
                            "insert into supabase_migrations.schema_migrations "
                            "(version, statements, name) values ($1, $2, $3)",
                            match["version"],
                            [sql],
                            match["name"],
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"{path.name}: {exc}") from exc
                log.info("applied migration %s", path.name)
                applied.append(path.name)
            if applied:
                await connection.execute("notify pgrst, 'reload schema'")
        finally:
            await connection.execute("select pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await connection.close()
    return applied
