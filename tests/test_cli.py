"""The ``travelbot`` command as an engineer or a traveller runs it: real processes, real stdin."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sqlite3
import sys
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from services.models import today_anywhere
from tests.support.happy_path import CONFIRMED, PASSPORT, PASSPORT_MASKED, booking_script

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [
    "TELEGRAM_BOT_TOKEN",
    "REDIS_URL",
    "SUPABASE_URL",
    "STRIPE_SECRET_KEY",
    "FLIGHT_PROVIDER",
    "PUBLIC_BASE_URL",
    "PORT",
    "SQLITE_PATH",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


async def _run(*args: str, cwd: Path, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode()


async def test_doctor_reports_each_port_on_the_embedded_defaults(tmp_path: Path) -> None:
    code, out = await _run("doctor", cwd=tmp_path)
    assert code == 0, out
    for port, adapter in [
        ("storage", "sqlite"),
        ("state", "memory"),
        ("flights", "demo"),
        ("payments", "sandbox"),
    ]:
        line = next(line for line in out.splitlines() if line.startswith(port))
        assert adapter in line.lower(), line
        assert line.rstrip().endswith("ok"), line


async def test_doctor_says_which_port_does_not_answer(tmp_path: Path) -> None:
    code, out = await _run("doctor", cwd=tmp_path, REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0")
    assert code == 1
    state = next(line for line in out.splitlines() if line.startswith("state"))
    assert "FAILED" in state


async def test_migrate_creates_the_sqlite_schema(tmp_path: Path) -> None:
    code, out = await _run("migrate", cwd=tmp_path, SQLITE_PATH="db/bot.sqlite3")
    assert code == 0, out
    with closing(sqlite3.connect(tmp_path / "db/bot.sqlite3")) as db:
        tables = {
            row[0] for row in db.execute("select name from sqlite_master where type = 'table'")
        }
    assert {"profiles", "bookings", "flight_searches", "payment_events", "admin_audit"} <= tables


class Console:
    """``travelbot console`` in a subprocess, typed into line by line like a person would."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output = ""
        self.turns = 0  # lines typed: the traveller's turns

    async def expect(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = re.search(pattern, self.output)
            if found:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not in console output:\n{self.output[-3000:]}")
            try:
                chunk = await asyncio.wait_for(self.process.stdout.read(4096), remaining)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"console ended before {pattern!r}:\n{self.output[-3000:]}")
            self.output += chunk.decode()

    async def type(self, line: str, then: str) -> re.Match[str]:
        """Type a line and wait for ``then`` to appear after it. Each line is one turn."""
        self.turns += 1
        assert self.process.stdin is not None
        mark = len(self.output)
        self.process.stdin.write(f"{line}\n".encode())
        await self.process.stdin.drain()
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            found = re.search(then, self.output[mark:])
            if found:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{then!r} not after {line!r}:\n{self.output[mark:][-3000:]}")
            try:
                chunk = await asyncio.wait_for(self.process.stdout.read(4096), remaining)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"console ended:\n{self.output[-3000:]}")
            self.output += chunk.decode()

    def button(self, label: str) -> str:
        """The number the console printed for the newest button with ``label``."""
        matches = re.findall(r"\[(\d+)\] ([^\[\n]*)", self.output)
        for number, text in reversed(matches):
            if text.strip() == label:
                return str(number)
        for number, text in reversed(matches):
            if label in text:
                return str(number)
        raise AssertionError(f"no button {label!r}")


@pytest.mark.timeout(120)
async def test_a_full_booking_in_the_console_lisbon_to_tokyo(tmp_path: Path) -> None:
    """Issue 4 and 5: the happy path (tests/support/happy_path.py: /start → Lisbon to Tokyo →
    one adult) → paid on the sandbox page → confirmed in the chat with a reference, and the
    booking row confirmed in SQLite."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "console",
        "--user-id",
        "4242",
        cwd=tmp_path,
        env=_env(PORT=str(_free_port())),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    console = Console(process)
    try:
        await console.expect(r"Type a message")
        # Issue 14: a one-adult one-way booking in at most 12 turns, /start to payment link.
        script = booking_script(today_anywhere() + timedelta(days=90))
        for move in script:
            line = console.button(move.press) if move.press is not None else move.text
            assert line is not None
            await console.type(line, re.escape(move.expect))
            if move.search:
                results = console.output[console.output.rfind("LIS → TYO") :]
                assert "demo fares" in results
                assert "1 adult" in results
                assert re.search(r"\d\d:\d\d LIS → \d\d:\d\d (NRT|HND)", results)
                assert re.search(r"\d+h \d\dm", results)
        total = re.findall(r"Total: (€[\d,.]+)", console.output)[-1]
        review = console.output[console.output.rfind("Passport expiry") :]
        assert PASSPORT not in review  # only ever shown masked once typed
        assert PASSPORT_MASKED in console.output
        link = re.search(r"<(http://127\.0\.0\.1:\d+/checkout/sandbox/[^>]+)>", console.output)
        assert link is not None
        assert console.turns == len(script) <= 12, console.turns
        url = link.group(1)
        reference = re.search(r"Booking (\w{6}) is held", console.output)
        assert reference is not None
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as page:
                html = await page.text()
                assert page.status == 200
                assert "TEST PAYMENT" in html
                assert total in html
            async with http.post(f"{url}/pay") as paid:
                assert paid.status == 200
        await console.expect(CONFIRMED)
        confirmation = console.output[console.output.rfind(CONFIRMED) :]
        assert reference.group(1) in confirmation
        # The calendar file in the chat, and the email written where the console says.
        await console.expect(rf"bot \(file\): {reference.group(1)}\.ics")
        eml = await console.expect(r"email to the traveller written to (\S+\.eml)")
        assert (tmp_path / eml.group(1)).is_file()
        assert "Emails to travellers are written as .eml files into data/outbox" in console.output
        assert process.stdin is not None
        process.stdin.write(b"/quit\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    with closing(sqlite3.connect(tmp_path / "data/travelbot.sqlite3")) as db:
        rows = db.execute("select reference, status, amount_minor, currency from bookings")
        (row,) = list(rows)
    assert row[0] == reference.group(1)
    assert row[1] == "confirmed"
    assert isinstance(row[2], int)
    assert f"{row[2] / 100:,.2f}" in total


async def test_console_works_with_piped_stdin(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "console",
        cwd=tmp_path,
        env=_env(PORT=str(_free_port())),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(b"/start\nberlin\n/help\n/quit\n"), 60)
    text = out.decode()
    assert process.returncode == 0, text
    assert "Where are you flying from" in text
    assert "From Berlin" in text
    assert "/mybookings" in text
    assert "[1] My bookings" in text
