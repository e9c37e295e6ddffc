"""The aiohttp Bot API transport, through a real PTB ``Bot``, against a Telegram stand-in that
misbehaves on demand: slow answers, dropped connections, nobody listening, a full pool.

What Telegram's own answers turn into (BadRequest, RetryAfter, ...) is tested over both
transports in ``test_sandbox_api.py``; here it is what the network does to a call.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import NetworkError, TimedOut

from bot.telegram_http import AiohttpRequest

TOKEN = "123456:transport-test-token"
ME = {"id": 123456, "is_bot": True, "first_name": "Travel", "username": "travel_bot"}


@dataclass
class FakeTelegram:
    """Answers like the Bot API; ``delay`` holds an answer, ``drop`` cuts the connection."""

    base_url: str = ""
    delay: float = 0.0
    drop: bool = False
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    files: dict[str, tuple[str | None, bytes]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params: dict[str, Any] = {}
        if request.content_type == "application/json":
            params = await request.json()
        elif request.content_type == "multipart/form-data":
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    self.files[name] = (value.filename, value.file.read())
                else:
                    params[name] = value
        self.calls.append((method, request.content_type, params))
        if self.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if self.delay:
            await asyncio.sleep(self.delay)
        result: Any = True
        if method == "getMe":
            result = ME
        elif method in {"sendMessage", "sendDocument"}:
            result = {
                "message_id": len(self.calls),
                "date": 0,
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "text": params.get("text", ""),
            }
        elif method == "getUpdates":
            result = []
        return web.json_response({"ok": True, "result": result})


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.base_url = f"http://127.0.0.1:{port}/bot"
    yield fake
    await runner.cleanup()


def bot_for(telegram: FakeTelegram, **timeouts: Any) -> Bot:
    return Bot(TOKEN, base_url=telegram.base_url, request=AiohttpRequest(**timeouts))


async def test_a_message_goes_as_json_and_its_answer_comes_back(telegram: FakeTelegram) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Book", callback_data="b:1")]])
    async with bot_for(telegram) as bot:
        sent = await bot.send_message(
            42, "Paris <b>€99</b>", parse_mode="HTML", reply_markup=markup
        )

    assert sent.chat_id == 42
    assert sent.text == "Paris <b>€99</b>"
    method, content_type, params = telegram.calls[-1]
    assert (method, content_type) == ("sendMessage", "application/json")
    assert params["parse_mode"] == "HTML"
    assert json.loads(params["reply_markup"]) == {
        "inline_keyboard": [[{"text": "Book", "callback_data": "b:1"}]]
    }


async def test_a_file_goes_as_multipart_with_its_name_and_the_other_fields(
    telegram: FakeTelegram,
) -> None:
    async with bot_for(telegram) as bot:
        await bot.send_document(
            42, document=b"%PDF-1.7 ticket", filename="ticket.pdf", caption="Hi"
        )

    method, content_type, params = telegram.calls[-1]
    assert (method, content_type) == ("sendDocument", "multipart/form-data")
    assert params["chat_id"] == "42"
    assert params["caption"] == "Hi"
    assert list(telegram.files.values()) == [("ticket.pdf", b"%PDF-1.7 ticket")]


async def test_an_answer_slower_than_the_read_timeout_is_timed_out(telegram: FakeTelegram) -> None:
    async with bot_for(telegram, read_timeout=0.2) as bot:
        telegram.delay = 1.0
        with pytest.raises(TimedOut):
            await bot.send_message(42, "hello")


async def test_a_long_poll_waits_for_its_own_timeout_on_top_of_the_read_timeout(
    telegram: FakeTelegram,
) -> None:
    """PTB adds getUpdates' ``timeout`` to the read timeout: a poll held open longer than the
    read timeout alone is an empty answer, not an error."""
    async with bot_for(telegram, read_timeout=0.2) as bot:
        telegram.delay = 0.6
        assert await bot.get_updates(timeout=1) == ()


async def test_a_dropped_connection_is_a_network_error(telegram: FakeTelegram) -> None:
    async with bot_for(telegram) as bot:
        telegram.drop = True
        with pytest.raises(NetworkError) as raised:
            await bot.send_message(42, "hello")
    assert not isinstance(raised.value, TimedOut)


async def test_nobody_listening_is_a_network_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bot = Bot(TOKEN, base_url=f"http://127.0.0.1:{port}/bot", request=AiohttpRequest())
    with pytest.raises(NetworkError):
        await bot.initialize()  # getMe
    await bot.shutdown()


async def test_a_call_that_finds_the_pool_full_times_out_without_being_sent(
    telegram: FakeTelegram,
) -> None:
    async with bot_for(
        telegram, connection_pool_size=1, pool_timeout=0.2, connect_timeout=0.2, read_timeout=5
    ) as bot:
        telegram.delay = 1.0
        first = asyncio.create_task(bot.send_message(42, "first"))
        await asyncio.sleep(0.1)
        with pytest.raises(TimedOut):
            await bot.send_message(42, "second")
        assert (await first).text == "first"
    assert [params["text"] for method, _, params in telegram.calls if method == "sendMessage"] == [
        "first"
    ]


async def test_a_closed_transport_refuses_calls_and_can_be_opened_again(
    telegram: FakeTelegram,
) -> None:
    request = AiohttpRequest()
    bot = Bot(TOKEN, base_url=telegram.base_url, request=request)
    with pytest.raises(NetworkError, match="not initialized"):
        await bot.get_me()
    async with bot:
        assert (await bot.get_me()).username == "travel_bot"
    await request.shutdown()  # twice is harmless
    async with bot:
        assert (await bot.send_message(7, "again")).text == "again"
