"""Every state of every flow at the engine seam: reached, refusing bad input with a specific
message while the user stays put, refusing an expired button, and left by /cancel.

The states are the router's own (``engine.router.states``): a state added to a flow without a way
to it in ``tests.support.flowkit.PATHS`` (and an entry in ``BAD_INPUT`` here) fails the suite.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from conversations.engine import EXPIRED_BUTTON
from conversations.state import StateRecord
from tests.support.flowkit import DAYS_AHEAD, PATHS, Chat, SeamKit


def _yesterday(kit: SeamKit) -> str:
    return (kit.today() - timedelta(days=1)).isoformat()


def _before_departure(kit: SeamKit) -> str:
    return (kit.day(DAYS_AHEAD) - timedelta(days=3)).isoformat()


# What each state cannot use, and the words of its refusal. A callable gives the text from the kit.
BAD_INPUT: dict[str, tuple[object, str]] = {
    "search:origin": ("Qwxzvbn", "I couldn't find a place called “Qwxzvbn”"),
    "search:destination": ("Lisbon", "You're already flying from Lisbon"),
    "search:trip": ("one way please", "Tap One-way or Return above."),
    "search:departure": (_yesterday, "That date has passed"),
    "search:return": (_before_departure, "The return can't be before the departure"),
    "search:travellers": ("3 adults", "Use the − and + buttons above"),
    "search:results": ("the cheap one", "Tap a flight's number to see it"),
    "search:detail": ("book it", "Tap Book to continue with this flight"),
    "book:price": ("fine", "Tap Continue to book at the new price"),
    "book:field": ("Ana 3000", "Last name: names have no digits"),
    "book:review": ("looks good", "Check the details above, then tap Pay, Edit or Cancel."),
    "book:edit": ("the email", "Tap the detail you want to change"),
    "book:payment": ("paid?", "Waiting for your payment for booking"),
    "admin:menu": ("stats please", "Pick a button above, or type an admin command"),
    "admin:ask": ("K7 MP3Q", "Usage: /booking REF"),
    "admin:refund_confirm": ("yes", "Tap “Refund” to confirm or “Don't refund”."),
    "admin:broadcast_text": ("x" * 5000, "The message must be 1 to"),
    "admin:broadcast_confirm": ("send it", "Tap “Send”, “Edit” or “Cancel” under the preview."),
    "alerts:target": ("cheap please", "I need a price."),
}


async def test_every_state_the_router_declares_has_a_seam_path(seam: SeamKit) -> None:
    declared = set(seam.engine.router.states)
    assert declared - set(PATHS) == set(), "add a path in tests/support/flowkit.PATHS"
    assert declared - set(BAD_INPUT) == set(), "add its bad input to BAD_INPUT"
    assert set(PATHS) - declared == set(), "a path to a state the router no longer has"


async def _reach(seam: SeamKit, state: str) -> Chat:
    chat = await PATHS[state](seam)
    assert await chat.state() == state
    return chat


@pytest.mark.parametrize("state", sorted(PATHS))
async def test_bad_input_is_refused_and_the_user_stays(seam: SeamKit, state: str) -> None:
    chat = await _reach(seam, state)
    before = await chat.record()
    given, refusal = BAD_INPUT[state]
    text = given(seam) if callable(given) else str(given)
    reply = await chat.say(text)
    assert refusal in reply.text
    after = await chat.record()
    assert after.state == state
    # What was understood stays; only the question's own scratch (the month the calendar
    # shows, places offered) may follow the refusal.
    scratch = {"calendar_month", "choices", "suggestions"}
    assert _without(after.data, scratch) == _without(before.data, scratch)


def _without(data: dict[str, object], keys: set[str]) -> dict[str, object]:
    search = data.get("search")
    if not isinstance(search, dict):
        return data
    return {**data, "search": {k: v for k, v in search.items() if k not in keys}}


def _older_copy(chat: Chat, record: StateRecord) -> str:
    """The newest button the chat shows (one of this step's), as the step before rendered it."""
    for message in reversed(chat.messages):
        for button in message.buttons:
            data = button.callback_data
            if data and not data.startswith("!"):
                _, action, arg = data.split("|", 2)
                return chat.stale(record, action, arg)
    return chat.stale(record, "noop")


@pytest.mark.parametrize("state", sorted(PATHS))
async def test_an_expired_button_changes_nothing(seam: SeamKit, state: str) -> None:
    chat = await _reach(seam, state)
    before = await chat.record()
    reply = await chat.press_data(_older_copy(chat, before))
    assert reply.notice == EXPIRED_BUTTON
    assert reply.messages == []
    assert await chat.record() == before


@pytest.mark.parametrize("state", sorted(PATHS))
async def test_cancel_leaves_every_state(seam: SeamKit, state: str) -> None:
    chat = await _reach(seam, state)
    reply = await chat.say("/cancel")
    assert "Cancelled. Your bookings are kept" in reply.text
    record = await chat.record()
    assert record.state is None
    assert record.data == {}


@pytest.mark.parametrize("state", sorted(PATHS))
async def test_an_unknown_command_is_answered_and_keeps_the_state(
    seam: SeamKit, state: str
) -> None:
    chat = await _reach(seam, state)
    before = await chat.record()
    reply = await chat.say("/frobnicate")
    assert "I don't know that command" in reply.text
    assert await chat.record() == before
