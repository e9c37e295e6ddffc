"""The package as a host installs it: a wheel in a new virtual environment, away from the checkout.

``uv build`` makes the wheel; the locked dependencies go into a fresh venv (from uv's cache, as
a platform build would take them from the lock file) and the wheel on top. From a folder that is
not the checkout, ``travelbot migrate`` applies the packaged SQL to a scratch PostgreSQL database
with Supabase's roles, and ``travelbot webhook`` answers its health routes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
import pytest_asyncio

from bot.sandbox import SandboxBotApi
from services.storage.sealing import new_key
from tests.support.supabase_stack import (
    _SUPABASE_DEFAULTS,
    TABLES,
    create_scratch_database,
    database_dsn,
    drop_database,
    ensure_roles,
    free_port,
)

ROOT = Path(__file__).resolve().parents[1]
# Nothing that picks an adapter or a module path leaks in from whoever runs the tests.
_INHERITED_OUT = ("REDIS", "SUPABASE", "STRIPE", "TELEGRAM", "KIWI", "DATABASE_URL", "PUBLIC_")


def _uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is not on PATH (scripts/test installs it)"
    return found


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a new venv holding the built wheel and the locked dependencies."""
    folder = tmp_path_factory.mktemp("wheel")
    uv = _uv()
    _run(uv, "build", "--wheel", "--out-dir", str(folder / "dist"), cwd=ROOT)
    (wheel,) = (folder / "dist").glob("travelbot-*.whl")
    venv = folder / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "VIRTUAL_ENV": str(venv),
    }
    _run(
        uv,
        "sync",
        "--locked",
        "--no-dev",
        "--no-install-project",
        "--quiet",
        "--python",
        sys.executable,
        cwd=ROOT,
        env=env,
    )
    python = str(venv / "bin" / "python")
    _run(uv, "pip", "install", "--quiet", "--no-deps", "--python", python, str(wheel), cwd=folder)
    # The wheel's own requirements are met by the locked set (nothing missing or too old).
    _run(uv, "pip", "check", "--python", python, cwd=folder)
    where = _run(python, "-c", "import bot, services; print(bot.__file__)", cwd=folder, env=_env())
    assert "site-packages" in where, where  # the installed code, not the checkout's
    return venv / "bin"


def _env(**settings: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_INHERITED_OUT) and key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(settings)
    return env


@pytest_asyncio.fixture
async def scratch_database() -> AsyncIterator[str]:
    """An empty database as a new Supabase project has it: its roles and default grants."""
    await ensure_roles()
    name = await create_scratch_database()
    try:
        connection = await asyncpg.connect(database_dsn(name))
        try:
            await connection.execute(_SUPABASE_DEFAULTS)
        finally:
            await connection.close()
        yield database_dsn(name)
    finally:
        await drop_database(name)


async def test_the_installed_wheel_migrates_a_supabase_database(
    installed: Path, scratch_database: str, tmp_path: Path
) -> None:
    env = _env(
        SUPABASE_URL="http://127.0.0.1:9",  # never called by migrate
        SUPABASE_SERVICE_ROLE_KEY="not-used-by-migrate",
        DATA_ENCRYPTION_KEYS=new_key(),  # a Supabase deploy sets it; migrate does not use it
        DATABASE_URL=scratch_database,
    )
    first = _run(str(installed / "travelbot"), "migrate", cwd=tmp_path, env=env)
    assert "20261124000000_initial_schema.sql" in first
    again = _run(str(installed / "travelbot"), "migrate", cwd=tmp_path, env=env)
    assert "none pending" in again

    connection = await asyncpg.connect(scratch_database)
    try:
        rows = await connection.fetch(
            "select tablename, rowsecurity from pg_tables where schemaname = 'public'"
        )
        recorded = await connection.fetchval(
            "select count(*) from supabase_migrations.schema_migrations"
        )
    finally:
        await connection.close()
    tables = {row["tablename"]: row["rowsecurity"] for row in rows}
    assert set(TABLES) <= set(tables)
    assert all(tables[name] for name in TABLES)  # row level security on, as in the checkout
    shipped = sorted((ROOT / "supabase" / "migrations").glob("*.sql"))
    assert recorded == len(shipped)


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def test_the_installed_wheel_serves_the_webhook_and_its_health(
    installed: Path, tmp_path: Path
) -> None:
    token = f"{secrets.randbelow(10**9) + 10**9}:SANDBOX-wheel-{secrets.token_hex(8)}"
    sandbox = SandboxBotApi(token=token)
    await sandbox.start()
    port = free_port()
    log = tmp_path / "webhook.log"
    env = _env(
        PTB_TIMEDELTA="true",
        TELEGRAM_BOT_TOKEN=token,
        TELEGRAM_API_BASE_URL=sandbox.url,
        TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram/webhook",
        TELEGRAM_WEBHOOK_SECRET=secrets.token_urlsafe(16),
        PORT=str(port),
    )
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(installed / "travelbot"), "webhook", cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while "listening on port" not in log.read_text(errors="replace"):
            assert process.returncode is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        assert await _get(f"{base}/healthz") == (200, '{"status": "ok"}')
        assert await _liveness(installed, port) == 0  # the image's HEALTHCHECK, from the wheel
        status, body = await _get(f"{base}/readyz")
        assert status == 200, body
        # It introduced itself for Telegram's empty-chat screen before it started listening.
        assert "book flights" in sandbox.profile_text("description")
        assert sandbox.profile_text("short_description")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0, log.read_text(errors="replace")
        assert await _liveness(installed, port) == 1
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await sandbox.stop()


async def _liveness(installed: Path, port: int) -> int:
    """The installed module, not the checkout's (``-m`` looks in the working folder first)."""
    probe = await asyncio.create_subprocess_exec(
        str(installed / "python"),
        "-m",
        "bot.liveness",
        "--web",
        cwd=installed,
        env={**os.environ, "PORT": str(port)},
    )
    return await asyncio.wait_for(probe.wait(), 30)
