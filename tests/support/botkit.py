"""A real bot for end-to-end tests: PTB's Application long-polling the sandbox Bot API.

Nothing of ours is replaced: the composition root builds the same runtime the console uses
(SQLite in a temporary folder, demo fares, sandbox checkout, memory or Redis state). Tests talk
as a Telegram user through the sandbox and read what the bot sent.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.bootstrap import Runtime, open_runtime
from bot.config import Settings, load_settings
from bot.sandbox import ChatMessage, SandboxBotApi, UserAction
from bot.web import init_app, start_site
from conversations.state import ChatKey, StateRecord
from services.flights.base import FlightProvider
from services.models import today_anywhere, utcnow
from tests.support.happy_path import Move

TOKEN = "424242:SANDBOX-test-token-not-a-secret"


@dataclass
class Reply:
    """What the bot did in answer to one user action."""

    messages: list[ChatMessage]
    notice: str | None

    @property
    def last(self) -> ChatMessage:
        assert self.messages, "the bot sent nothing"
        return self.messages[-1]

    @property
    def text(self) -> str:
        return "\n".join(m.text for m in self.messages)


class BotKit:
    """Drives one running bot as any number of sandbox users."""

    def __init__(self, sandbox: SandboxBotApi, runtime: Runtime, base_url: str) -> None:
        self.sandbox = sandbox
        self.runtime = runtime
        self.base_url = base_url
        self._users: set[int] = set()

    async def user(self, user_id: int, name: str = "Sam") -> int:
        if user_id not in self._users:
            await self.sandbox.add_user(user_id, first_name=name)
            self._users.add(user_id)
        return user_id

    async def _reply(self, action: UserAction, timeout: float) -> Reply:
        messages = await self.sandbox.wait_for_reply(action, timeout=timeout)
        notice = None
        for record in self.sandbox.callback_queries():
            if record.chat_id == action.chat_id and record.answered and record.answer_text:
                notice = record.answer_text
        return Reply(messages=[m for m in messages if m.from_bot], notice=notice)

    async def say(self, user_id: int, text: str, *, timeout: float = 15) -> Reply:
        await self.user(user_id)
        action = await self.sandbox.user_sends(user_id, text)
        return await self._reply(action, timeout)

    async def press(self, user_id: int, label: str, *, timeout: float = 15) -> Reply:
        """Press the button labelled ``label`` (exactly, else containing it) on the newest
        message that has one."""
        for message in reversed(self.sandbox.bot_messages(user_id)):
            buttons = [b for row in message.buttons for b in row if b.callback_data is not None]
            chosen = next((b for b in buttons if b.label == label), None) or next(
                (b for b in buttons if label in b.label), None
            )
            if chosen is not None and chosen.callback_data is not None:
                action = await self.sandbox.user_presses(
                    user_id, message.message_id, chosen.callback_data
                )
                return await self._reply(action, timeout)
        raise AssertionError(f"no button {label!r} in chat {user_id}")

    async def play(self, user_id: int, moves: Iterable[Move]) -> Reply:
        """Play a script (tests/support/happy_path.py) as ``user_id``: each move must get its
        answer and reach its state. The last move's reply."""
        reply = Reply(messages=[], notice=None)
        for move in moves:
            if move.press is not None:
                reply = await self.press(user_id, move.press)
            else:
                assert move.text is not None
                reply = await self.say(user_id, move.text)
            assert move.expect in reply.text, f"{move.said}: {reply.text[:400]!r}"
            if move.state is not None:
                assert (await self.state(user_id)).state == move.state, move.said
        return reply

    async def press_raw(
        self, user_id: int, message_id: int, data: str, *, timeout: float = 15
    ) -> Reply:
        action = await self.sandbox.user_presses_raw(user_id, message_id, data)
        return await self._reply(action, timeout)

    async def state(self, user_id: int) -> StateRecord:
        key = ChatKey(bot_id=self.runtime.application.bot.id, chat_id=user_id)
        return await self.runtime.adapters.state.peek(key)

    def buttons(self, user_id: int) -> list[tuple[str, str | None, int]]:
        """(label, callback data, message id) of the newest message with buttons."""
        for message in reversed(self.sandbox.bot_messages(user_id)):
            if message.buttons:
                return [
                    (b.label, b.callback_data, message.message_id)
                    for row in message.buttons
                    for b in row
                ]
        return []


def future_day(days: int = 90) -> date:
    """A day ``days`` ahead of the bot's own idea of today (the last time zone's date)."""
    return today_anywhere() + timedelta(days=days)


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path,
    *,
    redis_url: str | None = None,
    provider: FlightProvider | None = None,
    admin_ids: str = "",
    clock: Callable[[], datetime] | None = None,
    **settings: Any,
) -> AsyncIterator[BotKit]:
    """A polling bot on the sandbox, with its web server for the sandbox checkout page."""
    # Bound now and handed to the web server, so no other process can take the port between
    # choosing it and serving on it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # One process on Redis state runs its own background jobs unless a test says otherwise
    # (the arq queue and `travelbot worker` have tests of their own: test_job_workers).
    settings.setdefault("job_queue_backend", "embedded")
    config: Settings = load_settings(
        sqlite_path=tmp_path / "bot.sqlite3",
        redis_url=redis_url,
        admin_user_ids=admin_ids,
        port=port,
        **settings,
    )
    # The bot answers within milliseconds here; a short quiet period keeps the suite fast. A
    # scripted chat types far faster than a person, so Telegram's per-chat burst is raised:
    # the bot would wait out each 429 (PTB's rate limiter) and the flow tests would only get
    # slow. Flood behaviour has tests of its own (test_sandbox_*, test_conversation_e2e).
    sandbox = SandboxBotApi(token=TOKEN, idle_quiet=0.05, per_chat_burst=10_000)
    await sandbox.start()
    try:
        async with open_runtime(
            config,
            token=TOKEN,
            telegram_base_url=sandbox.url,
            provider=provider,
            clock=clock or utcnow,
        ) as runtime:
            runner = await start_site(
                init_app(runtime, telegram_webhook_route=False), sock=listener
            )
            app = runtime.application
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling(poll_interval=0.0, timeout=5)
            try:
                yield BotKit(sandbox, runtime, config.base_url)
            finally:
                await app.updater.stop()
                await app.stop()
                await runner.cleanup()
    finally:
        await sandbox.stop()
        listener.close()
