"""The bot's introduction: what Telegram shows before a user's first message.

The description fills the empty chat ("What can this bot do?"), the short description the
bot's profile page and links shared to it. Both are sent at start-up (``publish_profile``),
only when they differ from what Telegram has, so restarting many workers costs two reads each.
"""

from __future__ import annotations

import logging

from telegram.error import TelegramError
from telegram.ext import ExtBot

log = logging.getLogger(__name__)

# Telegram's limits: 512 and 120 characters.
DESCRIPTION = (
    "I find and book flights for you, right here in the chat.\n\n"
    "Tell me where you fly from and to, and when; pick a flight from the list, "
    "enter each traveller's details as the airline needs them, and pay securely through a "
    "Stripe checkout link. Your confirmation and booking reference arrive in this chat.\n\n"
    "/mybookings shows your trips, /cancel stops at any step, /help lists everything."
)
SHORT_DESCRIPTION = "Find, book and pay for flights in this chat. Press Start and tell me where."


async def publish_profile(bot: ExtBot[None]) -> None:
    """Set the description and short description; a failure is logged, never fatal."""
    try:
        if (await bot.get_my_description()).description != DESCRIPTION:
            await bot.set_my_description(DESCRIPTION)
        if (await bot.get_my_short_description()).short_description != SHORT_DESCRIPTION:
            await bot.set_my_short_description(SHORT_DESCRIPTION)
    except TelegramError as error:
        log.warning("could not publish the bot's description: %s", error)
