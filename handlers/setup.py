"""Publishing the command menu: everyone sees the traveller commands, admins see theirs too."""

from __future__ import annotations

import logging

from telegram import BotCommand, BotCommandScopeChat, BotCommandScopeDefault
from telegram.error import TelegramError
from telegram.ext import ExtBot

from conversations.router import build_registry

log = logging.getLogger(__name__)


async def publish_commands(bot: ExtBot[None], admin_ids: frozenset[int]) -> None:
    """Admin commands are scoped to each admin's chat, so nobody else is shown them. Both menus
    come from the flows' declarations (``conversations.flow.Command``)."""
    registry = build_registry()
    users = [BotCommand(name, description) for name, description in registry.menu(admin=False)]
    await bot.set_my_commands(users, scope=BotCommandScopeDefault())
    admins = [BotCommand(name, description) for name, description in registry.menu(admin=True)]
    for admin_id in sorted(admin_ids):
        try:
            await bot.set_my_commands(admins, scope=BotCommandScopeChat(admin_id))
        except TelegramError as error:
            # An admin who never opened the chat cannot be given a menu yet.
            log.warning("could not publish admin commands to %s: %s", admin_id, error)
