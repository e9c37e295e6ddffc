"""No log line, at any level, carries what a traveller typed about themselves (issue 12.11).

Real processes at ``LOG_LEVEL=DEBUG``: ``travelbot console`` typed into through its stdin and a
``travelbot webhook`` worker driven through the sandbox Bot API, each booking and paying. Then
everything they wrote is searched for the traveller's names, birth date, passport number and
expiry, email and phone, in the forms typed and the forms stored.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.sandbox import SandboxBotApi
from conversations.state_redis import RedisStateStore
from tests.support.botkit import BotKit, future_day
from tests.support.redis_db import delete_prefixed
from tests.support.supabase_stack import SupabaseStack
from tests.test_cli import Console, _env, _free_port
from tests.test_conversation_e2e import to_field
from tests.test_workers import Worker, WorkerEnv, WorkerKit, new_user, pay_on, sandbox_token

ROOT = Path(__file__).resolve().parents[1]

# Chosen unlike the bot's own examples ("e.g. 1990-05-17"), so a hit is always a leak.
TYPED = {
    "full_name": "Quiteria Vasconcelos",  # one answer, stored as first and last name
    "birth_date": "23.11.1987",
    "passport": "XK7654321",
    "expiry": "2033-04-29",
    "email": "quiteria.v@example.org",
    "phone": "+351 934 567 812",
}
FORMS = (
    "Quiteria",
    "Vasconcelos",
    "23.11.1987",
    "1987-11-23",
    "XK7654321",
    "7654321",
    "2033-04-29",
    "quiteria.v",
    "example.org",
    "934 567 812",
    "934567812",
)


def leaks(text: str) -> list[str]:
    folded = text.casefold()
    return [form for form in FORMS if form.casefold() in folded]


def _log_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR)", line)
    ]


@pytest.mark.timeout(150)
async def test_a_console_booking_at_debug_logs_no_personal_data(tmp_path: Path) -> None:
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "console",
            "--user-id",
            "4343",
            cwd=tmp_path,
            env=_env(PORT=str(_free_port()), LOG_LEVEL="DEBUG"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    console = Console(process)
    try:
        await console.expect(r"Type a message")
        await console.type("/start", "Where are you flying from")
        await console.type("Lisbon", "To where")
        await console.type("FCO", "When do you fly")
        await console.type(future_day(60).isoformat(), r"Page 1 of")
        await console.type(console.button("1"), "Full name")
        await console.type(TYPED["full_name"], "On the ticket: VASCONCELOS/QUITERIA")
        await console.type(console.button("✓ VASCONCELOS/QUITERIA"), "Name confirmed")
        await console.type(TYPED["birth_date"], "Gender")
        await console.type(console.button("Female"), "Nationality")
        await console.type("Portugal", "Passport number")
        await console.type(TYPED["passport"], "Passport expiry")
        await console.type(TYPED["expiry"], "Email")
        await console.type(TYPED["email"], "Phone")
        await console.type(TYPED["phone"], "Review your booking")
        link = await console.type(
            console.button("Pay"), r"<(http://127\.0\.0\.1:\d+/checkout/sandbox/[^>]+)>"
        )
        async with aiohttp.ClientSession() as http, http.post(f"{link.group(1)}/pay") as paid:
            assert paid.status == 200
        await console.expect(r"Booking confirmed")
        await console.type("/mydata", "What I store about you")
        assert process.stdin is not None
        process.stdin.write(b"/quit\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    logged = errors.read_text(errors="replace")
    assert " DEBUG " in logged  # the level really was DEBUG
    assert leaks(logged) == []
    # Standard output is the chat itself (the traveller's own review is shown to them), and
    # nothing else: no log line goes there.
    assert _log_lines(console.output) == []
    # Nor any other file it wrote (a log file, a dump); the data folder holds data, not logs.
    assert _leaks_in_files(tmp_path, besides={errors, tmp_path / "data"}) == {}


def _leaks_in_files(folder: Path, *, besides: set[Path]) -> dict[str, list[str]]:
    return {
        str(path): found
        for path in folder.rglob("*")
        if path.is_file() and not besides & {path, *path.parents}
        if (found := leaks(path.read_text(errors="replace")))
    }


def _spawn_worker(env: WorkerEnv, folder: Path) -> Worker:
    port = _free_port()
    log = folder / "worker.log"
    with log.open("ab") as out:
        process = subprocess.Popen(  # reaped by the fixture
            [sys.executable, "-m", "bot", "webhook"],
            cwd=folder,
            env={**env.environment(port), "LOG_LEVEL": "DEBUG"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Worker(name="debug", port=port, log=log, process=process)


@pytest.fixture(params=["sqlite", "supabase"])
def worker_storage(request: pytest.FixtureRequest) -> SupabaseStack | None:
    """Where the worker stores (sync, so it may pull in the session stack)."""
    if request.param == "sqlite":
        return None
    stack: SupabaseStack = request.getfixturevalue("supabase_stack")
    return stack


@pytest.fixture
async def worker(
    worker_storage: SupabaseStack | None, tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Worker, WorkerKit]]:
    """One ``travelbot webhook`` at DEBUG on Redis, storing in SQLite or in the
    Supabase-compatible stack."""
    supabase_stack = worker_storage
    if supabase_stack is not None:
        await supabase_stack.reset()
    token = sandbox_token()
    sandbox = SandboxBotApi(token=token, idle_quiet=0.05, webhook_retry_delay=0.1)
    await sandbox.start()
    env = WorkerEnv(
        folder=tmp_path,
        token=token,
        sandbox_url=sandbox.url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        supabase=supabase_stack,
    )
    running = _spawn_worker(env, tmp_path)
    store = RedisStateStore.from_url(redis_url, prefix=redis_prefix)
    try:
        await running.ready()
        await sandbox.set_webhook_targets([running.webhook_url])
        yield running, WorkerKit(sandbox, store)
    finally:
        if running.process.poll() is None:
            await running.stop()
        await sandbox.stop()
        await store.close()
        client = Redis.from_url(redis_url, socket_timeout=2)
        try:
            await delete_prefixed(client, redis_prefix)
        finally:
            await client.aclose()


async def _book(kit: BotKit, user: int) -> None:
    await to_field(kit, user)
    await kit.say(user, TYPED["full_name"])
    confirmed = await kit.press(user, "✓ VASCONCELOS/QUITERIA")
    assert confirmed.notice is not None
    await kit.say(user, TYPED["birth_date"])
    await kit.press(user, "Female")
    for answer in ("Portugal", TYPED["passport"], TYPED["expiry"], TYPED["email"]):
        await kit.say(user, answer)
    reply = await kit.say(user, TYPED["phone"])
    assert "Review your booking" in reply.text
    reply = await kit.press(user, "Pay")
    assert "is held for you" in reply.text


@pytest.mark.timeout(120)
async def test_a_webhook_booking_at_debug_logs_no_personal_data(
    worker: tuple[Worker, WorkerKit],
) -> None:
    running, kit = worker
    user = new_user()
    await _book(kit, user)
    paid = await pay_on(running, kit, user)
    assert any("confirmed" in m.text.lower() for m in paid)
    await kit.say(user, "/mybookings")
    await kit.say(user, "/mydata")
    await running.stop()

    logged = running.output()
    assert " DEBUG " in logged
    assert leaks(logged) == []


# A script that logs the worst cases directly: exceptions whose messages quote a traveller,
# a pydantic error on a traveller, and an exception nobody catches.
_TRACEBACKS = """
import logging
from bot.cli import setup_logging
from services.models import Traveller
from services.storage.sealing import Sealer, new_key

setup_logging("DEBUG")
log = logging.getLogger("probe")
sealer = Sealer([new_key()])
stored = sealer.seal({
    "category": "adult", "first_name": "QUITERIA", "last_name": "VASCONCELOS",
    "birth_date": "1987-11-23", "gender": "F", "nationality": "PT",
    "passport_number": "XK7654321", "passport_expiry": "2033-04-29",
    "email": "quiteria.v@example.org", "phone": "+351934567812",
})
traveller = Traveller.model_validate(sealer.open(stored))
log.debug("about to ticket %r", traveller)
try:
    raise RuntimeError(
        "provider refused passenger QUITERIA VASCONCELOS born 23.11.1987, "
        "passport XK7654321 valid to 2033-04-29, contact quiteria.v@example.org +351 934 567 812"
    )
except RuntimeError:
    log.exception("ticketing failed")
# Airlines write a name as the ticket prints it, the way the booking form now shows it.
log.error("airline refused passenger VASCONCELOS/QUITERIA MRS")
try:
    Traveller.model_validate({"first_name": "Quiteria", "passport_number": "XK7654321"})
except ValueError:
    log.warning("bad traveller", exc_info=True)
log.info("stack", stack_info=True)
import threading
thread = threading.Thread(target=lambda: {}["quiteria.v@example.org"], name="worker-thread")
thread.start()
thread.join()
raise KeyError("XK7654321")
"""


async def test_tracebacks_and_uncaught_errors_are_cleaned_too(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _TRACEBACKS,
        cwd=tmp_path,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert process.returncode == 1, text
    assert "ticketing failed" in text
    assert "RuntimeError: provider refused passenger <redacted> <redacted>" in text
    assert "<email> <phone>" in text
    assert "refused passenger <redacted>/<redacted> MRS" in text
    assert "CRITICAL travelbot: uncaught exception" in text
    assert "uncaught exception in thread worker-thread" in text
    assert "KeyError" in text
    assert leaks(text) == []
