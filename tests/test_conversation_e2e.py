"""End to end through the sandbox Bot API with the real PTB Application: what a traveller sees."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conversations.engine import encode_callback
from conversations.flows.admin import StoreChatStates
from tests.support.botkit import BotKit, future_day, running_bot

USER = 5001


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[BotKit]:
    async with running_bot(tmp_path) as kit:
        yield kit


def _iso(days: int = 90) -> str:
    return future_day(days).isoformat()


# Paths that take a fresh chat to each state of each flow. The last step is what gets there.
async def to_origin(bot: BotKit, user: int) -> None:
    await bot.say(user, "/start")


async def to_destination(bot: BotKit, user: int) -> None:
    await to_origin(bot, user)
    await bot.say(user, "Lisbon")


async def to_departure(bot: BotKit, user: int) -> None:
    await to_destination(bot, user)
    await bot.say(user, "FCO")


async def to_return(bot: BotKit, user: int) -> None:
    await to_departure(bot, user)
    await bot.press(user, "Add a return date")
    await bot.say(user, _iso(90))


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


TRAVELLER = ["Maria Silva", "17.05.1990"]
TRAVELLER_REST = ["Portugal", "CA1234567", "2031-08-20", "maria@example.com"]


async def fill_traveller(bot: BotKit, user: int) -> None:
    """One adult's answers, from the first question to the review."""
    for answer in TRAVELLER:
        await bot.say(user, answer)
    await bot.press(user, "Female")
    for answer in TRAVELLER_REST:
        await bot.say(user, answer)
    await bot.press(user, "Skip")


async def to_review(bot: BotKit, user: int) -> None:
    await to_field(bot, user)
    await fill_traveller(bot, user)


async def to_edit(bot: BotKit, user: int) -> None:
    await to_review(bot, user)
    await bot.press(user, "Edit")


async def to_payment(bot: BotKit, user: int) -> None:
    await to_review(bot, user)
    await bot.press(user, "Pay")


PATHS: dict[str, Callable[[BotKit, int], Awaitable[None]]] = {
    "search:origin": to_origin,
    "search:destination": to_destination,
    "search:departure": to_departure,
    "search:return": to_return,
    "search:travellers": to_travellers,
    "search:results": to_results,
    "book:field": to_field,
    "book:review": to_review,
    "book:edit": to_edit,
    "book:payment": to_payment,
}


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


@pytest.mark.parametrize("state", sorted(PATHS))
async def test_cancel_from_every_state_clears_the_flow(bot: BotKit, state: str) -> None:
    await PATHS[state](bot, USER)
    assert (await bot.state(USER)).state == state
    reply = await bot.say(USER, "/cancel")
    assert "Cancelled" in reply.text
    record = await bot.state(USER)
    assert record.state is None
    assert record.data == {}


async def test_cancel_keeps_bookings(bot: BotKit) -> None:
    await to_payment(bot, USER)
    await bot.say(USER, "/cancel")
    reply = await bot.say(USER, "/mybookings")
    assert "Awaiting payment" in reply.text


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
    assert bot.sandbox.all_callbacks_answered()


@pytest.mark.parametrize(
    "forged",
    ["zz|trip|2", "not-a-token", "!nosuchaction|x", "0|trip|9", "|||", "1|pick|99.ffffff"],
)
async def test_a_forged_button_changes_nothing(bot: BotKit, forged: str) -> None:
    await to_departure(bot, USER)
    before = await bot.state(USER)
    message_id = bot.buttons(USER)[0][2]
    reply = await bot.press_raw(USER, message_id, forged)
    assert reply.notice is not None
    assert await bot.state(USER) == before
    assert bot.sandbox.all_callbacks_answered()


async def test_a_chat_stored_in_the_old_trip_question_still_goes_on(bot: BotKit) -> None:
    """``search:trip`` is no longer asked, but a record stored by an earlier version loads."""
    await to_departure(bot, USER)
    record = await bot.state(USER)
    writer = StoreChatStates(
        bot.runtime.adapters.state, bot_id=bot.runtime.application.bot.id, ttl=600
    )
    assert await writer.put(USER, "search:trip", record.data)
    stored = await bot.state(USER)
    message_id = bot.buttons(USER)[0][2]
    reply = await bot.press_raw(USER, message_id, encode_callback(stored.version, "trip", "2"))
    assert "Return trip" in reply.text
    assert (await bot.state(USER)).state == "search:departure"


async def test_typed_text_is_escaped_when_echoed(bot: BotKit) -> None:
    await to_origin(bot, USER)
    reply = await bot.say(USER, "<b>Atlantis</b> & co")
    assert "<b>Atlantis</b> & co" in reply.text  # shown literally, not as bold markup
    assert not bot.sandbox.api_errors()


async def test_unexpected_text_in_a_button_state_gets_that_states_hint(bot: BotKit) -> None:
    await to_results(bot, USER)
    before = await bot.state(USER)
    reply = await bot.say(USER, "whatever")
    assert "Tap a flight's number" in reply.text
    assert await bot.state(USER) == before


async def test_unknown_command_is_answered_and_keeps_the_flow(bot: BotKit) -> None:
    await to_destination(bot, USER)
    before = await bot.state(USER)
    reply = await bot.say(USER, "/frobnicate")
    assert "don't know that command" in reply.text
    assert await bot.state(USER) == before


async def test_deep_link_opens_the_booking(bot: BotKit) -> None:
    await to_payment(bot, USER)
    reference = (await bot.state(USER)).data["booking"]["reference"]
    reply = await bot.say(USER, f"/start booking_{reference}")
    assert f"Booking {reference}" in reply.text
    other = await bot.say(USER + 1, f"/start booking_{reference}")
    assert reference not in other.text  # someone else's reference is not found


async def test_flood_gets_one_polite_reply_then_silence(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as kit:
        kit.runtime.engine.rate = type(kit.runtime.engine.rate)(limit=3, window=60)  # type: ignore[misc]
        replies = [await kit.say(USER, f"hello {i}", timeout=3) for i in range(3)]
        assert all(r.messages for r in replies)
        polite = await kit.say(USER, "hello again", timeout=3)
        assert "very fast" in polite.text
        for i in range(3):
            action = await kit.sandbox.user_sends(USER, f"more {i}")
            with pytest.raises(Exception, match=r"no matching event|not idle|expected"):
                await kit.sandbox.wait_for_reply(action, timeout=1)


# --- the traveller's details in fewer turns -----------------------------------------------------


async def _values(bot: BotKit) -> dict[str, object]:
    values: dict[str, object] = (await bot.state(USER)).data["booking"]["travellers"][0]["values"]
    return values


async def test_the_full_name_in_one_answer_is_shown_as_printed(bot: BotKit) -> None:
    await to_field(bot, USER)
    reply = await bot.say(USER, "Ana Maria da Silva")
    assert "On the ticket: <b>DA SILVA/ANA MARIA</b>" in bot.sandbox.bot_messages(USER)[-1].html
    assert "Date of birth" in reply.text
    confirmed = await bot.press(USER, "✓ DA SILVA/ANA MARIA")
    assert confirmed.notice is not None
    assert "Name confirmed" in confirmed.notice
    assert (await bot.state(USER)).data["booking"]["field"] == "birth_date"
    await bot.press(USER, "Swap first and last name")
    assert (await _values(bot))["first_name"] == "DA SILVA"
    await bot.press(USER, "Type them apart")
    await bot.say(USER, "Ana Maria")
    reply = await bot.say(USER, "da Silva")
    assert "Date of birth" in reply.text
    assert await _values(bot) == {"first_name": "ANA MARIA", "last_name": "DA SILVA"}


async def test_gender_buttons_follow_the_date_of_birth(bot: BotKit) -> None:
    await to_field(bot, USER)
    await bot.say(USER, "Ana Silva")
    reply = await bot.say(USER, "17.05.1990")
    assert "Born 17 May 1990" in reply.text
    assert {"Female", "Male"} <= {label for label, _, _ in bot.buttons(USER)}
    reply = await bot.press(USER, "Female")
    assert "Nationality" in reply.text


async def test_a_birth_date_whose_day_and_month_could_swap_is_asked(bot: BotKit) -> None:
    await to_field(bot, USER)
    await bot.say(USER, "Ana Silva")
    reply = await bot.say(USER, "12/08/1988")
    assert "Which date do you mean" in reply.text
    assert "birth_date" not in await _values(bot)
    await bot.press(USER, "8 Dec 1988")
    assert (await _values(bot))["birth_date"] == "1988-12-08"


async def test_back_from_the_first_question_returns_to_the_results(bot: BotKit) -> None:
    await to_field(bot, USER)
    await bot.press(USER, "‹ Back to results")
    state = await bot.state(USER)
    assert state.state == "search:results"
    assert state.data["booking"] is None


async def test_start_offers_the_last_search_and_names_the_saved_travellers(bot: BotKit) -> None:
    first = await bot.say(USER, "/start")
    assert "Again" not in str(first.last.buttons)
    await to_payment(bot, USER)
    reply = await bot.say(USER, "/start")
    assert "Saved travellers: MARIA SILVA" in reply.text
    again = await bot.press(USER, "Again:")
    state = await bot.state(USER)
    assert state.state == "search:departure"
    assert state.data["search"]["origin"]["code"] == "LIS"
    assert state.data["search"]["destination"]["code"] == "FCO"
    assert "When do you fly?" in again.text


async def test_prices_are_explained_before_pay(bot: BotKit) -> None:
    await bot.say(USER, "/start")
    results = await bot.say(USER, f"LIS-FCO {_iso(60)} 2 adults 1 child")
    assert "Prices are the total for 2 adults, 1 child, taxes included." in results.text
    await bot.press(USER, "1")
    await fill_traveller(bot, USER)
    people = [
        ("Joao Silva", "22.11.1985", "Male", "CB7654321"),
        ("Pedro Silva", "17.05.2016", "Male", "CC1357924"),
    ]
    for name, born, gender, passport in people:
        await bot.say(USER, name)
        await bot.say(USER, born)
        await bot.press(USER, gender)
        for answer in ("Portugal", passport, "2031-08-20"):
            await bot.say(USER, answer)
    review = bot.sandbox.bot_messages(USER)[-1].text
    assert (await bot.state(USER)).state == "book:review", review
    assert "Adult × 2:" in review
    assert "Child: €" in review
    assert "Taxes and fees, included: €" in review
    assert "Changes: " in review
    assert "Refund: " in review
    assert "Cabin bag" in review
    assert review.index("Refund: ") < review.index("Total: €")
