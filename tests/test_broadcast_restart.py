"""A broadcast to 1,000 sandbox users survives its worker being killed.

The bot runs as a real process (``python -m bot polling``) against the sandbox Bot API, on
SQLite. When the sandbox has received 40% of the messages the process is killed with SIGKILL
(from inside the sandbox, the moment that message arrives) and started again: it resumes the
broadcast by itself, and in the end every reachable user has it exactly once, nobody twice, no
429 came back from the sandbox, and the admin has the progress and the final counts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

from bot.sandbox import DEFAULT_TOKEN, EventKind, SandboxBotApi, SandboxEvent
from services.broadcast import DEFAULT_LANES
from services.storage.sqlite import SQLiteStorage

ADMIN = 1_000_001
FIRST_USER = 2_000_001
USERS = 1_000
BLOCKED_BY_ADMIN = 5  # left out of the broadcast
BLOCKED_THE_BOT = 10  # Telegram answers 403: marked, not counted as reached
TEXT = "Spring fares are out: Lisbon → Tokyo from €489. Reply /start to search."
KILL_AT = 0.40


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _bot_process(folder: Path, sandbox_url: str, log: Path) -> subprocess.Popen[bytes]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS", "SUPABASE", "STRIPE", "TELEGRAM", "KIWI"))
    }
    env = {
        **keep,
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_BASE_URL": sandbox_url,
        "SQLITE_PATH": str(folder / "bot.sqlite3"),
        "ADMIN_USER_IDS": str(ADMIN),
        "PORT": str(_free_port()),
        "FLIGHT_PROVIDER": "demo",
        "LOG_LEVEL": "INFO",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "polling"],
            cwd=folder,  # no stray .env
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _exited(process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the bot process did not exit")
        await asyncio.sleep(0.05)
    return process.returncode


async def _seed(folder: Path, sandbox: SandboxBotApi) -> list[int]:
    """1,000 users who have used the bot before: a profile each, and an open chat."""
    storage = SQLiteStorage(folder / "bot.sqlite3")
    await storage.start()
    users = list(range(FIRST_USER, FIRST_USER + USERS))
    try:
        await storage.upsert_profile(ADMIN, username="ada_admin", first_name="Ada")
        for user_id in users:
            await storage.upsert_profile(user_id, first_name="Traveller")
        for user_id in users[:BLOCKED_BY_ADMIN]:
            await storage.set_blocked(user_id, True)
    finally:
        await storage.close()
    await sandbox.add_user(ADMIN, "Ada", "ada_admin")
    for user_id in users:
        await sandbox.add_user(user_id, "Traveller")
        await sandbox.user_sends(user_id, "/start")
    for user_id in users[-BLOCKED_THE_BOT:]:
        await sandbox.user_blocks_bot(user_id)
    # Those chats are history: the bot never sees these old updates.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sandbox.url}/bot{DEFAULT_TOKEN}/deleteWebhook", json={"drop_pending_updates": True}
        ) as response,
    ):
        assert response.status == 200
    assert sandbox.pending_updates() == 0
    return users


@pytest.mark.timeout(240)
async def test_broadcast_to_1000_users_killed_at_40_percent_reaches_everyone_once() -> None:
    with tempfile.TemporaryDirectory(prefix="travelbot-broadcast-") as name:
        folder = Path(name)
        log = folder / "bot.log"
        sandbox = SandboxBotApi()
        await sandbox.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            users = await _seed(folder, sandbox)
            recipients = USERS - BLOCKED_BY_ADMIN + 1  # the admin too
            late_block = users[-BLOCKED_THE_BOT - 1]  # blocked while the broadcast runs
            reachable = (set(users[BLOCKED_BY_ADMIN:-BLOCKED_THE_BOT]) | {ADMIN}) - {late_block}
            kill_after = int(recipients * KILL_AT)
            delivered: Counter[int] = Counter()
            total = [0]
            preview_seen: list[bool] = []
            killed_at: list[float] = []

            def watch(event: SandboxEvent) -> None:
                if event.kind is not EventKind.BOT_MESSAGE or event.message is None:
                    return
                if event.message.text != TEXT or event.chat_id is None:
                    return
                if event.chat_id == ADMIN and not preview_seen:
                    preview_seen.append(True)  # the admin's first copy is the preview
                    return
                delivered[event.chat_id] += 1
                total[0] += 1
                if not killed_at and total[0] >= kill_after:
                    # SIGKILL mid-broadcast, while that very message is still being answered
                    os.kill(processes[0].pid, signal.SIGKILL)
                    killed_at.append(time.monotonic())

            sandbox.add_listener(watch)
            processes.append(_bot_process(folder, sandbox.url, log))

            asked = await sandbox.user_sends(ADMIN, "/broadcast")
            await sandbox.wait_for_reply(asked, timeout=30)
            preview = await sandbox.user_sends(ADMIN, TEXT)
            await sandbox.wait_for_messages(ADMIN, 2, since=preview.seq, timeout=10)
            label = f"Send to {recipients:,} users"
            started = time.monotonic()
            await sandbox.user_presses_label(ADMIN, label)
            blocking = await sandbox.user_sends(ADMIN, f"/block {late_block}")
            await sandbox.wait_for_event(
                lambda event: (
                    event.chat_id == ADMIN
                    and event.message is not None
                    and event.message.text.startswith(f"⛔ {late_block}")
                ),
                since=blocking.seq,
                timeout=10,
            )

            assert await _exited(processes[0], timeout=60) == -signal.SIGKILL
            before_restart = total[0]
            processes.append(_bot_process(folder, sandbox.url, log))

            def final_report(event: SandboxEvent) -> bool:
                return (
                    event.kind is EventKind.BOT_MESSAGE
                    and event.chat_id == ADMIN
                    and event.message is not None
                    and "finished" in event.message.text
                )

            report = await sandbox.wait_for_event(final_report, since=0, timeout=120)
            duration = time.monotonic() - started
            processes[1].send_signal(signal.SIGTERM)
            assert await _exited(processes[1], timeout=30) == 0

            with closing(sqlite3.connect(folder / "bot.sqlite3")) as db:
                rows = dict(
                    db.execute("SELECT user_id, status FROM broadcast_deliveries").fetchall()
                )
            statuses = Counter(rows.values())
            interrupted = {user for user, status in rows.items() if status == "interrupted"}
            copies = {user: delivered[user] for user in rows}
            reached = {user for user, count in copies.items() if count == 1}
            admin_chat = [m.text for m in sandbox.bot_messages(ADMIN)]
            too_many = [e.error for e in sandbox.api_errors() if "Too Many" in (e.error or "")]

            print(
                f"\nbroadcast to {recipients} recipients: {duration:.1f} s from Send to the "
                f"final report ({recipients / duration:.1f} msg/s), killed after "
                f"{before_restart} ({before_restart / recipients:.0%}); reached once: "
                f"{len(reached)}, blocked the bot: {statuses['bot_blocked']}, in doubt after "
                f"the kill: {len(interrupted)} (reached: {len(interrupted & reached)}), "
                f"429s: {len(too_many)}\n{report.message.text if report.message else ''}"
            )

            assert len(rows) == recipients
            assert max(copies.values()) == 1, "somebody got the broadcast twice"
            assert reached == reachable, "everyone reachable gets it exactly once"
            assert statuses["bot_blocked"] == BLOCKED_THE_BOT
            assert statuses["failed"] == 1  # the user blocked mid-way was skipped
            assert rows[late_block] == "failed"
            assert statuses["pending"] == statuses["sending"] == 0
            assert len(interrupted) <= DEFAULT_LANES
            assert interrupted <= reached  # killed while Telegram was answering: it arrived
            assert too_many == []
            assert before_restart >= kill_after
            assert any("resumed after a restart" in text for text in admin_chat)
            assert any(text.endswith("(25%).") for text in admin_chat)
            assert report.message is not None
            assert f"delivered: {statuses['sent']:,}" in report.message.text
            assert f"have blocked the bot: {BLOCKED_THE_BOT}" in report.message.text
            assert "failed or skipped (blocked, erased): 1" in report.message.text
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            await sandbox.stop()
            if os.environ.get("TRAVELBOT_SHOW_LOG") and log.exists():
                print(log.read_text())
