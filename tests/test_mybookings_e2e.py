"""The traveller's own data as a file in the chat: /mydata's JSON goes out through sendDocument.

My bookings, cancelling with a refund, resuming or abandoning a payment, /deletedata and saved
travellers are flow behaviour, tested at the engine seam (tests/test_seam_common.py); paying on
the sandbox checkout page over HTTP is tests/test_conversation_e2e.py's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.botkit import BotKit, running_bot
from tests.test_conversation_e2e import to_payment

USER = 9301


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[BotKit]:
    async with running_bot(tmp_path) as kit:
        yield kit


async def _reference(bot: BotKit) -> str:
    reference: str = (await bot.state(USER)).data["booking"]["reference"]
    return reference


async def test_mydata_is_a_readable_summary_with_the_json_as_a_file(bot: BotKit) -> None:
    await to_payment(bot, USER)
    reference = await _reference(bot)
    reply = await bot.say(USER, "/mydata")
    summary = reply.messages[0]
    assert "{" not in summary.text  # no raw JSON in the chat
    assert "Saved travellers (1)" in summary.text
    assert reference in summary.text
    files = [m.document for m in reply.messages if m.document is not None]
    assert len(files) == 1
    assert files[0].file_name is not None
    assert files[0].file_name.endswith(".json")
    stored = json.loads(files[0].content)
    assert stored["bookings"][0]["reference"] == reference
    assert stored["saved_travellers"][0]["first_name"] == "MARIA"
    assert "CA1234567" not in files[0].content.decode()
