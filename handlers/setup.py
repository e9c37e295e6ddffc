"""Publishing the command menu: everyone sees the traveller commands, admins see theirs too."""

from __future__ import annotations

import logging

from telegram import BotCommand, BotCommandScopeChat, BotCommandScopeDefault
from telegram.error import TelegramError
from telegram.ext import ExtBot

from conversations.flows.common import USER_COMMANDS

log = logging.getLogger(__name__)

ADMIN_COMMANDS: tuple[tuple[str, str], ...] = ()


def admin_commands() -> tuple[tuple[str, str], ...]:
    try:
        from conversations.flows.admin import ADMIN_COMMAND_MENU
    except ImportError:
        return ()
    return tuple(ADMIN_COMMAND_MENU)


async def publish_commands(bot: ExtBot[None], admin_ids: frozenset[int]) -> None:
    """Admin commands are scoped to each admin's chat, so nobody else is shown them."""
    users = [BotCommand(name, description) for name, description in USER_COMMANDS]
    await bot.set_my_commands(users, scope=BotCommandScopeDefault())
    admins = users + [BotCommand(name, description) for name, description in admin_commands()]
    for admin_id in sorted(admin_ids):
        try:
            await bot.set_my_commands(admins, scope=BotCommandScopeChat(admin_id))
        except TelegramError as error:
            # An admin who never opened the chat cannot be given a menu yet.
            log.warning("could not publish admin commands to %s: %s", admin_id, error)
