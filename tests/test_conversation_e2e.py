"""End to end through the sandbox Bot API with the real PTB Application: the wiring.

What the flows do is tested at the engine seam (tests/test_seam_*.py, milliseconds a turn); here
the same engine runs behind PTB, the Bot API and the web server, and a few tests check that an
update becomes a turn, its replies become Bot API calls, every button press is answered, and a
payment on the sandbox checkout page reaches the chat. The paths below take a chat to a state
for the other end-to-end modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import happy_path
from tests.support.botkit import BotKit, future_day, running_bot

USER = 5001


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[BotKit]:
    async with running_bot(tmp_path) as kit:
        yield kit


def _iso(days: int = 90) -> str:
    return future_day(days).isoformat()


# Paths that take a fresh chat to a state, for the end-to-end modules. The last step gets there.
async def to_origin(bot: BotKit, user: int) -> None:
    await bot.say(user, "/start")


async def to_destination(bot: BotKit, user: int) -> None:
    await to_origin(bot, user)
    await bot.say(user, "Lisbon")


async def to_departure(bot: BotKit, user: int) -> None:
    await to_destination(bot, user)
    await bot.say(user, "FCO")


async def to_results(bot: BotKit, user: int) -> None:
    await to_departure(bot, user)
    await bot.say(user, _iso(90))


async def to_travellers(bot: BotKit, user: int) -> None:
    await to_results(bot, user)
    await bot.press(user, "change")


async def to_field(bot: BotKit, user: int) -> None:
    """A result's number: its detail with the price checked and the first question."""
    await to_results(bot, user)
    await bot.press(user, "1")


# The happy path's traveller (tests/support/happy_path.py), as typed answers.
TRAVELLER = [happy_path.NAME, happy_path.BIRTH_DATE]
TRAVELLER_REST = [
    happy_path.NATIONALITY,
    happy_path.PASSPORT,
    happy_path.PASSPORT_EXPIRY,
    happy_path.EMAIL,
]


async def fill_traveller(bot: BotKit, user: int) -> None:
    """One adult's answers, from the first question to the review."""
    await bot.play(user, happy_path.TRAVELLER_MOVES)


async def to_review(bot: BotKit, user: int) -> None:
    await to_field(bot, user)
    await fill_traveller(bot, user)


async def to_payment(bot: BotKit, user: int) -> None:
    await to_review(bot, user)
    await bot.press(user, "Pay")


async def test_start_asks_the_first_search_question(bot: BotKit) -> None:
    reply = await bot.say(USER, "/start")
    assert "Where are you flying from?" in reply.text
    assert "Hi Sam" in reply.text
    assert (await bot.state(USER)).state == "search:origin"


async def test_start_publishes_no_admin_commands_to_travellers(bot: BotKit) -> None:
    from handlers.setup import publish_commands

    await publish_commands(bot.runtime.application.bot, frozenset())
    names = [c["command"] for c in bot.sandbox.commands()]
    assert "mybookings" in names
    assert "cancel" in names
    assert "stats" not in names


async def test_a_button_from_an_older_step_has_expired_and_changes_nothing(bot: BotKit) -> None:
    await to_departure(bot, USER)
    old = bot.buttons(USER)  # the calendar with "Add a return date"
    await bot.press(USER, "Add a return date")
    before = await bot.state(USER)
    _, data, message_id = next(b for b in old if "Add a return date" in b[0])
    assert data is not None
    reply = await bot.press_raw(USER, message_id, data)
    assert reply.notice is not None
    assert "expired" in reply.notice
    assert await bot.state(USER) == before
    forged = await bot.press_raw(USER, message_id, "not-a-token")
    assert forged.notice is not None
    assert "expired" in forged.notice
    assert bot.sandbox.all_callbacks_answered()
    assert not bot.sandbox.api_errors()


async def test_the_happy_path_books_and_the_sandbox_page_confirms_in_the_chat(
    bot: BotKit,
) -> None:
    """The shared script through PTB and the Bot API; the payment through the checkout page
    over HTTP, whose confirmation reaches the chat through the Telegram notifier."""
    await bot.play(USER, happy_path.booking_script(future_day(90)))
    reference = (await bot.state(USER)).data["booking"]["reference"]
    link = next(
        b.url for m in reversed(bot.sandbox.bot_messages(USER)) for b in m.flat_buttons if b.url
    )
    assert link is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as page:
            assert page.status == 200
            assert "TEST PAYMENT" in await page.text()
        async with http.post(f"{link}/pay") as paid:
            assert paid.status == 200
    await bot.sandbox.wait_for_messages(USER, 1, timeout=15)
    await bot.sandbox.wait_idle(USER, quiet=0.3)
    confirmation = next(
        m.text for m in reversed(bot.sandbox.bot_messages(USER)) if happy_path.CONFIRMED in m.text
    )
    assert reference in confirmation
    assert bot.sandbox.all_callbacks_answered()
    assert not bot.sandbox.api_errors()
