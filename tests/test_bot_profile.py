"""The bot's introduction on Telegram's empty-chat screen, and the sandbox's rules for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from telegram import Bot
from telegram.error import BadRequest

from bot.sandbox import SandboxBotApi
from handlers.profile import DESCRIPTION, SHORT_DESCRIPTION, publish_profile

SETTERS = ("setMyDescription", "setMyShortDescription")


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxBotApi]:
    api = SandboxBotApi()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def bot(sandbox: SandboxBotApi) -> AsyncIterator[Bot]:
    async with Bot(sandbox.token, base_url=sandbox.base_url) as tg_bot:
        yield tg_bot


async def test_descriptions_follow_telegrams_length_limits(
    sandbox: SandboxBotApi, bot: Bot
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)^description is too long"):
        await bot.set_my_description("x" * 513)
    with pytest.raises(BadRequest, match=r"(?i)short description is too long"):
        await bot.set_my_short_description("x" * 121)
    assert sandbox.profile_text("description") == ""  # a refused text changes nothing

    assert await bot.set_my_description("d" * 512)
    assert await bot.set_my_short_description("s" * 120)
    assert (await bot.get_my_description()).description == "d" * 512
    assert (await bot.get_my_short_description()).short_description == "s" * 120


async def test_a_language_falls_back_to_the_default_and_empty_removes(
    sandbox: SandboxBotApi, bot: Bot
) -> None:
    await bot.set_my_description("Flights, booked in the chat.")
    await bot.set_my_description("Voos, reservados no chat.", language_code="pt")
    assert (await bot.get_my_description(language_code="pt")).description.startswith("Voos")
    assert (await bot.get_my_description(language_code="de")).description.startswith("Flights")
    await bot.set_my_description("", language_code="pt")
    assert sandbox.profile_text("description", "pt").startswith("Flights")
    with pytest.raises(BadRequest, match=r"(?i)language code"):
        await bot.set_my_description("Flights", language_code="portuguese")


async def test_the_bot_introduces_itself_once(sandbox: SandboxBotApi, bot: Bot) -> None:
    assert len(DESCRIPTION) <= 512
    assert len(SHORT_DESCRIPTION) <= 120
    await publish_profile(bot)  # type: ignore[arg-type]
    assert "book flights" in sandbox.profile_text("description")
    assert "flights" in sandbox.profile_text("short_description")
    published = [e.method for e in sandbox.events() if e.method in SETTERS]
    assert sorted(published) == sorted(SETTERS)
    since = sandbox.last_seq
    await publish_profile(bot)  # type: ignore[arg-type]
    again = [e.method for e in sandbox.events(since) if e.method in SETTERS]
    assert again == []  # unchanged texts are not sent again by every worker that starts
