"""How updates reach the bot: long polling, webhooks with the secret header, several workers."""

from __future__ import annotations

import asyncio
import datetime as dtm
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import Conflict, RetryAfter
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.sandbox import EventKind, SandboxBotApi, SandboxEvent, SandboxTimeoutError

SECRET = "s3cret-Token_1"


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxBotApi]:
    api = SandboxBotApi(webhook_retry_delay=0.01, idle_quiet=0.1, wait_timeout=5.0)
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def bot(sandbox: SandboxBotApi) -> AsyncIterator[Bot]:
    async with Bot(sandbox.token, base_url=sandbox.base_url) as tg_bot:
        yield tg_bot


async def greet(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    assert update.effective_user is not None
    markup = InlineKeyboardMarkup(
        [[InlineKeyboardButton("Search flights", callback_data="v1:search")]]
    )
    await update.message.reply_text(
        f"Hi {update.effective_user.first_name}! payload={context.args}", reply_markup=markup
    )


async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query is not None
    await query.answer()
    await query.edit_message_text(f"Where are you flying from? ({query.data})")


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None
    assert update.message.text is not None
    await update.message.reply_text(f"echo: {update.message.text[:20]}")


def travel_app(
    sandbox: SandboxBotApi, *, polling: bool = True
) -> Application[Any, Any, Any, Any, Any, Any]:
    builder = ApplicationBuilder().token(sandbox.token).base_url(sandbox.base_url)
    if not polling:
        builder = builder.updater(None)
    app = builder.build()
    app.add_handler(CommandHandler("start", greet))
    app.add_handler(CallbackQueryHandler(pressed))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    return app


async def test_a_conversation_over_long_polling(sandbox: SandboxBotApi) -> None:
    user = await sandbox.add_user(first_name="Sam")
    app = travel_app(sandbox)
    async with app:
        assert app.updater is not None
        await app.updater.start_polling(timeout=dtm.timedelta(seconds=1))
        await app.start()
        try:
            action = await sandbox.user_sends(user.id, "/start deal_42")
            [greeting] = await sandbox.wait_for_reply(action)
            assert greeting.text == "Hi Sam! payload=['deal_42']"
            assert greeting.button_rows == [[("Search flights", "v1:search")]]

            press = await sandbox.user_presses(user.id, greeting.message_id, "v1:search")
            [edited] = await sandbox.wait_for_reply(press)
            assert edited.message_id == greeting.message_id
            assert (edited.text, edited.edit_count, edited.buttons) == (
                "Where are you flying from? (v1:search)",
                1,
                (),
            )
            assert sandbox.all_callbacks_answered()

            many = await sandbox.user_sends(user.id, "x" * 5000)  # a client splits long text
            assert len(many.updates) == 2
            replies = await sandbox.wait_for_messages(user.id, 2, since=press.seq)
            assert [reply.text for reply in replies] == ["echo: " + "x" * 20] * 2
        finally:
            await app.updater.stop()
            await app.stop()
    assert sandbox.api_errors() == []
    kinds = [e.kind for e in sandbox.events() if e.kind != EventKind.UPDATE_DELIVERED]
    assert kinds[:5] == [
        EventKind.USER_MESSAGE,
        EventKind.BOT_MESSAGE,
        EventKind.USER_CALLBACK,
        EventKind.CALLBACK_ANSWERED,
        EventKind.BOT_EDIT,
    ]


async def test_get_updates_offsets_and_long_polling(sandbox: SandboxBotApi, bot: Bot) -> None:
    user = await sandbox.add_user()
    for text in ("one", "two", "three"):
        await sandbox.user_sends(user.id, text)
    first = await bot.get_updates()
    assert [u.message.text for u in first if u.message] == ["one", "two", "three"]
    again = await bot.get_updates()  # nothing confirmed yet: the same updates come back
    assert [u.update_id for u in again] == [u.update_id for u in first]
    assert [u.message.text for u in await bot.get_updates(offset=-1) if u.message] == ["three"]
    assert await bot.get_updates(offset=first[-1].update_id + 1) == ()

    started = time.monotonic()
    assert await bot.get_updates(offset=first[-1].update_id + 1, timeout=1) == ()
    assert time.monotonic() - started >= 0.9

    waiting = asyncio.create_task(bot.get_updates(offset=first[-1].update_id + 1, timeout=5))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await sandbox.user_sends(user.id, "wake up")
    woke = await waiting
    assert [u.message.text for u in woke if u.message] == ["wake up"]
    assert time.monotonic() - started < 1


async def test_only_one_poller_and_no_polling_under_a_webhook(
    sandbox: SandboxBotApi, bot: Bot
) -> None:
    async with Bot(sandbox.token, base_url=sandbox.base_url) as second_instance:
        older = asyncio.create_task(second_instance.get_updates(timeout=5))
        await asyncio.sleep(0.1)
        assert await bot.get_updates() == ()
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await older
    assert await bot.set_webhook("https://bot.example.com/telegram/webhook", secret_token=SECRET)
    with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
        await bot.get_updates()
    assert await bot.delete_webhook()
    assert await bot.get_updates() == ()


async def test_allowed_updates_filter_what_telegram_produces(
    sandbox: SandboxBotApi, bot: Bot
) -> None:
    user = await sandbox.add_user()
    await bot.get_updates(allowed_updates=["callback_query"])
    await sandbox.user_sends(user.id, "not wanted")
    assert await bot.get_updates() == ()
    assert sandbox.pending_updates() == 0


@dataclass
class Traffic:
    """What all receivers saw: (receiver, update_id, secret header), and concurrency."""

    log: list[tuple[str, int, str | None]] = field(default_factory=list)
    per_chat: Counter[int] = field(default_factory=Counter)
    most_per_chat: int = 0
    total: int = 0
    most_total: int = 0


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records what it is sent."""

    name: str
    traffic: Traffic
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    app: Application[Any, Any, Any, Any, Any, Any] | None = None
    runner: web.AppRunner | None = None
    url: str = ""

    @property
    def log(self) -> list[tuple[str, int, str | None]]:
        return [entry for entry in self.traffic.log if entry[0] == self.name]

    async def handle(self, request: web.Request) -> web.Response:
        data = await request.json()
        chat_id = Update.de_json(data, None).effective_chat.id  # type: ignore[union-attr]
        traffic = self.traffic
        traffic.per_chat[chat_id] += 1
        traffic.total += 1
        traffic.most_per_chat = max(traffic.most_per_chat, traffic.per_chat[chat_id])
        traffic.most_total = max(traffic.most_total, traffic.total)
        try:
            secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
            traffic.log.append((self.name, data["update_id"], secret))
            await asyncio.sleep(self.delay)
            status = self.statuses.pop(0) if self.statuses else 200
            if status == 200 and self.app is not None:
                await self.app.update_queue.put(Update.de_json(data, self.app.bot))
            return web.Response(status=status)
        finally:
            traffic.per_chat[chat_id] -= 1
            traffic.total -= 1

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/telegram/webhook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/telegram/webhook"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    traffic = Traffic()
    made = [Receiver("a", traffic), Receiver("b", traffic)]
    for receiver in made:
        await receiver.start()
    yield made
    for receiver in made:
        await receiver.stop()


def delivered(sandbox: SandboxBotApi) -> list[SandboxEvent]:
    return sandbox.events(kinds={EventKind.UPDATE_DELIVERED})


async def test_a_webhook_bot_gets_updates_with_the_secret_header(
    sandbox: SandboxBotApi, receivers: list[Receiver]
) -> None:
    receiver = receivers[0]
    user = await sandbox.add_user(first_name="Ana")
    app = travel_app(sandbox, polling=False)
    receiver.app = app
    async with app:
        await app.start()
        try:
            await app.bot.set_webhook(receiver.url, secret_token=SECRET, max_connections=5)
            info = await app.bot.get_webhook_info()
            assert (info.url, info.max_connections) == (receiver.url, 5)
            action = await sandbox.user_sends(user.id, "/start")
            [greeting] = await sandbox.wait_for_reply(action)
            assert greeting.text == "Hi Ana! payload=[]"
        finally:
            await app.stop()
    assert receiver.log == [("a", action.update_id, SECRET)]


async def test_failed_deliveries_are_retried_then_dropped(
    sandbox: SandboxBotApi, bot: Bot, receivers: list[Receiver]
) -> None:
    receiver = receivers[0]
    user = await sandbox.add_user()
    await bot.set_webhook(receiver.url, secret_token=SECRET)
    receiver.statuses = [500]
    first = await sandbox.user_sends(user.id, "retried")
    await sandbox.wait_idle(user.id)
    assert [e.detail["attempt"] for e in delivered(sandbox)] == [2]
    assert [entry[1] for entry in receiver.log] == [first.update_id, first.update_id]

    receiver.statuses = [503] * (sandbox.webhook_retries + 1)
    await sandbox.user_sends(user.id, "dropped")
    await sandbox.wait_idle(user.id)
    assert len(delivered(sandbox)) == 1
    assert sandbox.pending_updates() == 0
    info = await bot.get_webhook_info()
    assert info.last_error_message == "Wrong response from the webhook: 503 Service Unavailable"
    dropped = sandbox.events(kinds={EventKind.DELIVERY_FAILED})[-1]
    assert dropped.detail == {"dropped": True}


async def test_round_robin_keeps_one_chats_updates_in_order(
    sandbox: SandboxBotApi, bot: Bot, receivers: list[Receiver]
) -> None:
    for receiver in receivers:
        receiver.delay = 0.05
    await bot.set_webhook("https://bot.example.com/telegram/webhook", secret_token=SECRET)
    await sandbox.set_webhook_targets([r.url for r in receivers])
    sam, ana = await sandbox.add_user(first_name="Sam"), await sandbox.add_user(first_name="Ana")
    sams = [await sandbox.user_sends(sam.id, f"sam {n}") for n in range(4)]
    await sandbox.user_sends(ana.id, "ana 0")
    await sandbox.wait_idle()

    traffic = receivers[0].traffic
    sam_log = [entry for entry in traffic.log if entry[1] in {a.update_id for a in sams}]
    assert [update_id for _, update_id, _ in sam_log] == [a.update_id for a in sams]
    assert [name for name, _, _ in sam_log] == ["a", "b", "a", "b"]
    assert {secret for _, _, secret in traffic.log} == {SECRET}
    # one chat is never delivered concurrently, but two chats are
    assert (traffic.most_per_chat, traffic.most_total) == (1, 2)


async def test_a_dead_worker_is_skipped(
    sandbox: SandboxBotApi, bot: Bot, receivers: list[Receiver]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/telegram/webhook"
    live = receivers[0]
    await bot.set_webhook("https://bot.example.com/telegram/webhook", secret_token=SECRET)
    await sandbox.set_webhook_targets([dead, live.url])
    user = await sandbox.add_user()
    actions = [await sandbox.user_sends(user.id, f"m{n}") for n in range(3)]
    await sandbox.wait_idle(user.id)
    assert [update_id for _, update_id, _ in live.log] == [a.update_id for a in actions]
    failures = sandbox.events(kinds={EventKind.DELIVERY_FAILED})
    assert failures
    assert {e.error for e in failures} == {"Connection refused"}


@pytest.mark.usefixtures("timedelta_retry_after")
async def test_rate_limiter_defaults_never_hit_the_overall_limit(sandbox: SandboxBotApi) -> None:
    users = [await sandbox.add_user() for _ in range(100)]
    for user in users:
        await sandbox.user_sends(user.id, "/start")

    async with Bot(sandbox.token, base_url=sandbox.base_url) as unthrottled:
        outcomes = await asyncio.gather(
            *(unthrottled.send_message(user.id, "flash sale") for user in users),
            return_exceptions=True,
        )
    assert any(isinstance(outcome, RetryAfter) for outcome in outcomes)

    sandbox.configure_limits()  # fresh buckets
    start = sandbox.last_seq
    app = (
        ApplicationBuilder()
        .token(sandbox.token)
        .base_url(sandbox.base_url)
        .rate_limiter(AIORateLimiter())
        .updater(None)
        .build()
    )
    async with app:
        started = time.monotonic()
        await asyncio.gather(
            *(app.bot.send_message(user.id, "your fare dropped") for user in users)
        )
        elapsed = time.monotonic() - started
    assert sandbox.api_errors(start) == []
    assert all(sandbox.last_bot_message(user.id).text == "your fare dropped" for user in users)
    assert elapsed > 2  # 100 messages at 30/s after a burst of 30


@pytest.fixture
def timedelta_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """PTB warns on every RetryAfter unless opted in to timedelta values (and warnings fail)."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


async def test_waiting_helpers_and_listeners(sandbox: SandboxBotApi, bot: Bot) -> None:
    seen: list[tuple[str, int | None]] = []
    seen_async: list[EventKind] = []

    async def remember(event: SandboxEvent) -> None:
        seen_async.append(event.kind)

    remove = sandbox.add_listener(lambda event: seen.append((event.kind.value, event.message_id)))
    sandbox.add_listener(remember)
    user = await sandbox.add_user()
    action = await sandbox.user_sends(user.id, "hello")
    with pytest.raises(SandboxTimeoutError, match="expected 1 new bot message"):
        await sandbox.wait_for_messages(user.id, timeout=0.2)
    sent = await bot.send_message(user.id, "hi there")
    [reply] = await sandbox.wait_for_messages(user.id)
    assert reply.message_id == sent.message_id
    remove()
    await bot.edit_message_text("hi again", user.id, sent.message_id)
    assert seen == [("user_message", action.message_id), ("bot_message", sent.message_id)]
    await asyncio.sleep(0)
    assert EventKind.BOT_EDIT in seen_async
