"""sendDocument on the sandbox Bot API, through a real python-telegram-bot ``Bot`` over both
transports: the file arrives with its name, type and bytes, and fails where Telegram fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from telegram import Bot, InputFile
from telegram.error import BadRequest, Forbidden

from bot.sandbox import SandboxBotApi, SandboxUser
from bot.telegram_http import AiohttpRequest

ICS = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxBotApi]:
    api = SandboxBotApi()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture(params=["httpx", "aiohttp"])
async def bot(sandbox: SandboxBotApi, request: pytest.FixtureRequest) -> AsyncIterator[Bot]:
    transport = AiohttpRequest() if request.param == "aiohttp" else None
    async with Bot(sandbox.token, base_url=sandbox.base_url, request=transport) as tg_bot:
        yield tg_bot


@pytest.fixture
async def traveller(sandbox: SandboxBotApi) -> SandboxUser:
    user = await sandbox.add_user(first_name="Sam")
    await sandbox.user_sends(user.id, "/start")
    return user


async def test_a_document_arrives_with_its_name_type_and_bytes(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    sent = await bot.send_document(
        traveller.id,
        InputFile(ICS, filename="K7QW2P.ics"),
        caption="Your <b>flights</b>",
        parse_mode="HTML",
    )

    assert sent.document is not None
    assert sent.document.file_name == "K7QW2P.ics"
    assert sent.document.mime_type == "text/calendar"
    assert sent.document.file_size == len(ICS)
    assert sent.caption == "Your flights"
    shown = sandbox.last_bot_message(traveller.id)
    assert shown.document is not None
    assert shown.document.content == ICS
    assert shown.document.file_name == "K7QW2P.ics"
    assert shown.text == "Your flights"

    again = await bot.send_document(traveller.id, sent.document.file_id)
    assert again.document is not None
    assert again.document.file_id == sent.document.file_id


async def test_documents_fail_where_telegram_fails(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)wrong file identifier"):
        await bot.send_document(traveller.id, "no-such-file-id")
    with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
        await bot.send_document(traveller.id, InputFile(ICS, filename="a.ics"), caption="x" * 1025)
    await sandbox.user_blocks_bot(traveller.id)
    with pytest.raises(Forbidden):
        await bot.send_document(traveller.id, InputFile(ICS, filename="a.ics"))
