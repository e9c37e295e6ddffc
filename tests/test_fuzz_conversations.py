"""Random and hostile input into every state of every flow, at the engine seam.

Invariants: nothing crashes (no error is logged, no exception leaves the engine), every input gets
an answer, every answer is one the Bot API accepts (the kit checks each reply's HTML and length by
the sandbox Bot API's rules), and input the state cannot use leaves the state as it was. The
states are reached by the paths of tests/support/flowkit.py (the happy path's, for the booking).
The Telegram edge (every button press answered, replies sent) has end-to-end tests of its own.
"""

from __future__ import annotations

import logging
import random

import pytest

from tests.support.flowkit import PATHS, SeamKit

NASTY_TEXT = [
    "x" * 5000,
    "<b>unclosed",
    "</i>",
    "&amp; &lt; &#x1F600; &bogus;",
    "<script>alert(1)</script>",
    "'; DROP TABLE bookings; --",
    "%s %d {0} {{}}",
    "\u202etxet lanoitceridib",
    "e\u0301\u0301\u0301\u0301",
    "🛫🛬" * 300,
    "\x00\x01\x02",
    "Ω≈ç√∫˜µ≤≥÷",
    "null",
    "9" * 400,
    "/start@other_bot",
]

# States that take no typed answer: text never moves them on.
BUTTON_ONLY = {
    "search:trip",
    "search:travellers",
    "search:results",
    "search:detail",
    "book:price",
    "book:review",
    "book:edit",
    "book:payment",
    "admin:menu",
    "admin:refund_confirm",
    "admin:broadcast_confirm",
}


def random_text(rng: random.Random) -> str:
    alphabet = "abcxyz ÄØßçあ中😀\u200b<>&/\\'\"0123456789\n\t"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))


def random_callback(rng: random.Random) -> str:
    pieces = ["|", "!", "0", "zz", "pick", "day", "pax", "a+", "i-", "99", "é", "."]
    data = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 10)))
    return data.encode()[:64].decode(errors="ignore") or "x"


@pytest.mark.parametrize("state", sorted(PATHS))
async def test_random_input_never_breaks_a_state(
    seam: SeamKit, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(f"fuzz:{state}")
    caplog.set_level(logging.ERROR)
    chat = await PATHS[state](seam)
    before = await chat.record()
    assert before.state == state
    seam.engine.rate = None  # a fuzzer types faster than any person; flood control has tests

    for data in [random_callback(rng) for _ in range(12)]:
        reply = await chat.press_data(data)
        assert reply.notice is not None or reply.messages, data
        assert await chat.record() == before, data

    for text in NASTY_TEXT + [random_text(rng) for _ in range(8)]:
        reply = await chat.say(text)
        assert reply.messages, text
        after = await chat.record()
        # Text a state cannot use changes nothing; text it can use moves on, and then the chat
        # is brought back to the state under test.
        if after != before:
            assert state not in BUTTON_ONLY, text
            await chat.say("/cancel")
            chat = await PATHS[state](seam)
            before = await chat.record()

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
