"""Sandbox Telegram Bot API: a local stand-in for api.telegram.org with simulated users.

``SandboxBotApi`` runs in-process; ``SandboxClient`` drives one running elsewhere
(``python -m bot.sandbox``) over its ``/sandbox/`` HTTP routes.
"""

from bot.sandbox.control import SandboxClient
from bot.sandbox.errors import ApiError, SandboxError, SandboxTimeoutError
from bot.sandbox.models import (
    Button,
    CallbackQueryRecord,
    ChatMessage,
    EventKind,
    SandboxDocument,
    SandboxEvent,
    SandboxUser,
    UserAction,
)
from bot.sandbox.ratelimit import SandboxLimits
from bot.sandbox.server import DEFAULT_TOKEN, SandboxBotApi

__all__ = [
    "DEFAULT_TOKEN",
    "ApiError",
    "Button",
    "CallbackQueryRecord",
    "ChatMessage",
    "EventKind",
    "SandboxBotApi",
    "SandboxClient",
    "SandboxDocument",
    "SandboxError",
    "SandboxEvent",
    "SandboxLimits",
    "SandboxTimeoutError",
    "SandboxUser",
    "UserAction",
]
