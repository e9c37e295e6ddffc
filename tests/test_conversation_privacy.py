"""What the conversation record keeps about a traveller once it no longer needs it (issue 12.9).

The record is read as stored: the raw bytes of the Redis key, or the memory store's bytes (the
same JSON both adapters write), so nothing of ours decodes or filters it on the way. At the
engine seam (tests/support/flowkit.py) on each state adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from conversations.state import ChatKey
from conversations.state_memory import encode_record
from services.flights.places import PlaceIndex
from tests.support.flowkit import BOT_ID, TRAVELLER_ID, Chat, SeamKit, scripted_seam, to_field

# What the traveller types, and the forms it may be stored in once normalised.
TYPED = {
    "full_name": "Quiteria Vasconcelos",  # one answer, stored as first and last name
    "birth_date": "17.05.1990",
    "passport": "XK7654321",
    "expiry": "2031-08-20",
    "email": "quiteria.v@example.com",
    "phone": "+351 912 345 678",
}
STORED_FORMS = (
    "QUITERIA",
    "Quiteria",
    "VASCONCELOS",
    "Vasconcelos",
    "VASCONCELOS/QUITERIA",  # the name as printed on the ticket
    "1990-05-17",
    "XK7654321",
    "2031-08-20",
    "quiteria.v@example.com",
    "+351912345678",
    "912 345 678",
)


@pytest.fixture(params=["memory", "redis"])
async def kit(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    places: PlaceIndex,
    redis_url: str,
    redis_prefix: str,
    redis_client: Redis,
) -> AsyncIterator[tuple[SeamKit, Redis | None, str]]:
    url = redis_url if request.param == "redis" else None
    async with scripted_seam(tmp_path, places, redis_url=url, redis_prefix=redis_prefix) as seam:
        yield seam, (redis_client if url else None), redis_prefix


async def _raw_record(kit: tuple[SeamKit, Redis | None, str]) -> str:
    """The chat's record exactly as the store holds it ('' when there is none)."""
    seam, client, prefix = kit
    key = ChatKey(bot_id=BOT_ID, chat_id=TRAVELLER_ID)
    if client is None:
        record = await seam.services.adapters.state.peek(key)
        return "" if record.is_empty else encode_record(record)
    raw = await client.get(key.state_key(prefix))
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _personal(raw: str) -> list[str]:
    return [form for form in STORED_FORMS if form in raw]


async def _to_review(seam: SeamKit) -> Chat:
    chat = await to_field(seam)
    await chat.say(TYPED["full_name"])
    confirmed = await chat.press("✓ VASCONCELOS/QUITERIA")
    assert "Name confirmed" in confirmed.toast
    await chat.say(TYPED["birth_date"])
    await chat.press("Female")
    for answer in ("Portugal", TYPED["passport"], TYPED["expiry"], TYPED["email"]):
        await chat.say(answer)
    reply = await chat.say(TYPED["phone"])
    assert "Review your booking" in reply.text
    return chat


async def test_the_record_holds_the_details_only_until_pay(
    kit: tuple[SeamKit, Redis | None, str],
) -> None:
    chat = await _to_review(kit[0])
    # Sanity check of the probe itself: while the form is open the details are there.
    assert len(_personal(await _raw_record(kit))) >= 6

    reply = await chat.press("Pay")
    assert "is held for you" in reply.text
    raw = await _raw_record(kit)
    assert "book:payment" in raw  # the chat is still waiting for the payment
    assert _personal(raw) == []

    # Still usable afterwards: the waiting step knows its booking by reference alone.
    reply = await chat.say("hello?")
    assert "Waiting for your payment" in reply.text
    assert _personal(await _raw_record(kit)) == []


async def test_cancel_removes_the_details_from_the_record(
    kit: tuple[SeamKit, Redis | None, str],
) -> None:
    chat = await _to_review(kit[0])
    await chat.say("/cancel")
    assert _personal(await _raw_record(kit)) == []


async def test_deletedata_removes_the_details_from_the_record(
    kit: tuple[SeamKit, Redis | None, str],
) -> None:
    """Erasing one's data in the middle of a booking form also erases the form."""
    chat = await _to_review(kit[0])
    await chat.say("/deletedata")
    # Asking is not erasing: the form is still there until the traveller confirms.
    assert _personal(await _raw_record(kit)) != []
    reply = await chat.press("Yes, erase my data")
    assert "your data is erased" in reply.text
    assert _personal(await _raw_record(kit)) == []
    # The form is gone: a city typed now starts a new search, not the booking it was in.
    reply = await chat.say("Lisbon")
    assert "To where?" in reply.text
    state = await chat.record()
    assert state.state == "search:destination"
    assert state.data.get("booking") is None
    assert _personal(await _raw_record(kit)) == []


async def test_deletedata_after_pay_leaves_nothing_in_the_record(
    kit: tuple[SeamKit, Redis | None, str],
) -> None:
    chat = await _to_review(kit[0])
    await chat.press("Pay")
    await chat.say("/deletedata")
    await chat.press("Yes, erase my data")
    assert await _raw_record(kit) == ""
