"""A sandbox in another process (``python -m bot.sandbox``), driven over its HTTP control routes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup

from bot.sandbox import EventKind, SandboxClient, SandboxError, SandboxTimeoutError

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "555000111:separate-process-sandbox-token"


@pytest.fixture
async def remote() -> AsyncIterator[SandboxClient]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.sandbox",
        "--port",
        "0",
        "--token",
        TOKEN,
        "--per-chat-burst",
        "5",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
    assert url.startswith("http://127.0.0.1:")
    client = SandboxClient(url)
    try:
        yield client
    finally:
        await client.close()
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_driving_a_sandbox_in_another_process(remote: SandboxClient) -> None:
    info = await remote.info()
    assert (info["token"], info["limits"]["per_chat_burst"]) == (TOKEN, 5)
    user = await remote.add_user(first_name="Lea", username="lea")
    async with Bot(TOKEN, base_url=remote.base_url) as bot:
        action = await remote.user_sends(user.id, "/start from_ad")
        [update] = await bot.get_updates(timeout=2)
        assert update.message is not None
        assert update.message.text == "/start from_ad"
        markup = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("One-way", callback_data="v1:ow"),
                    InlineKeyboardButton("Return", callback_data="v1:rt"),
                ]
            ]
        )
        sent = await bot.send_message(
            user.id, "<b>One-way or return?</b>", parse_mode="HTML", reply_markup=markup
        )
        [reply] = await remote.wait_for_messages(user.id, since=action.seq)
        assert (reply.message_id, reply.text) == (sent.message_id, "One-way or return?")
        assert reply.button_rows == [[("One-way", "v1:ow"), ("Return", "v1:rt")]]

        with pytest.raises(SandboxError, match="has no button with callback data 'v1:xx'"):
            await remote.user_presses(user.id, sent.message_id, "v1:xx")
        forged = await remote.user_presses_raw(user.id, sent.message_id, "v1:xx")
        pressed = await remote.user_presses_label(user.id, "Return")
        updates = await bot.get_updates(offset=update.update_id + 1, timeout=2)
        assert [u.callback_query.data for u in updates if u.callback_query] == ["v1:xx", "v1:rt"]
        await bot.answer_callback_query(updates[1].callback_query.id)  # type: ignore[union-attr]
        await bot.edit_message_text("Return it is.", user.id, sent.message_id)
        replies = await remote.wait_for_reply(pressed, quiet=0.05)
        assert [(m.text, m.edit_count) for m in replies] == [("Return it is.", 1)]

        records = {record.data: record.answered for record in await remote.callback_queries()}
        assert records == {"v1:xx": False, "v1:rt": True}
        assert not await remote.all_callbacks_answered()
        assert forged.update["callback_query"]["data"] == "v1:xx"

        transcript = await remote.transcript(user.id)
        assert [(m.from_bot, m.text) for m in transcript] == [
            (False, "/start from_ad"),
            (True, "Return it is."),
        ]
        kinds = [e.kind for e in await remote.events(action.seq - 1)]
        assert kinds[:2] == [EventKind.USER_MESSAGE, EventKind.UPDATE_DELIVERED]
        assert EventKind.CALLBACK_ANSWERED in kinds
        assert await remote.api_errors() == []

        with pytest.raises(SandboxTimeoutError):
            await remote.wait_for_messages(user.id, 1, timeout=0.2)
        await remote.wait_idle(user.id, quiet=0.05)

        limits = await remote.configure_limits(per_chat_burst=1)
        assert limits.per_chat_burst == 1
        with pytest.raises(SandboxError, match="unknown limit"):
            await remote.configure_limits(burst=1)

        blocked = await remote.user_blocks_bot(user.id)
        assert blocked.update["my_chat_member"]["new_chat_member"]["status"] == "kicked"


async def test_webhook_targets_set_over_http(remote: SandboxClient) -> None:
    received: list[tuple[int, str | None]] = []

    async def hook(request: web.Request) -> web.Response:
        data = await request.json()
        received.append((data["update_id"], request.headers.get("X-Telegram-Bot-Api-Secret-Token")))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with Bot(TOKEN, base_url=remote.base_url) as bot:
            await bot.set_webhook(
                "https://travel.example.com/telegram/webhook", secret_token="abc_123"
            )
        await remote.set_webhook_targets([f"http://{host}:{port}/hook"])
        user = await remote.add_user()
        action = await remote.user_sends(user.id, "hello")
        await remote.wait_idle(user.id, quiet=0.05)
        assert received == [(action.update_id, "abc_123")]
    finally:
        await runner.cleanup()
