"""Random and hostile input into every state of every flow, through the real bot.

Invariants: nothing crashes (no error reaches the central handler, no Bot API call is refused),
every input gets an answer, and input the state cannot use leaves the state as it was.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from tests.support.botkit import running_bot
from tests.test_conversation_e2e import PATHS

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

BUTTON_ONLY = {
    "search:trip",
    "search:travellers",
    "search:results",
    "search:detail",
    "book:review",
    "book:edit",
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
    tmp_path: Path, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(f"fuzz:{state}")
    user = 7000
    caplog.set_level(logging.ERROR)
    async with running_bot(tmp_path) as bot:
        await PATHS[state](bot, user)
        before = await bot.state(user)
        assert before.state == state
        # A fuzzer types faster than any person: flood control (ours and Telegram's) would
        # rightly go silent, which is tested elsewhere.
        bot.runtime.engine.rate = None
        bot.sandbox.configure_limits(enabled=False)

        for data in [random_callback(rng) for _ in range(12)]:
            message_id = bot.sandbox.bot_messages(user)[-1].message_id
            reply = await bot.press_raw(user, message_id, data)
            assert reply.notice is not None or reply.messages, data
            assert await bot.state(user) == before, data

        texts = NASTY_TEXT + [random_text(rng) for _ in range(8)]
        for text in texts:
            reply = await bot.say(user, text)
            assert reply.messages, text
            after = await bot.state(user)
            # Text a state cannot use changes nothing; text it can use moves on, and then the
            # chat is brought back to the state under test.
            if after != before:
                assert state not in BUTTON_ONLY, text
                await bot.say(user, "/cancel")
                await PATHS[state](bot, user)
                before = await bot.state(user)

        assert bot.sandbox.all_callbacks_answered()
        assert not bot.sandbox.api_errors(), [e.error for e in bot.sandbox.api_errors()]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
