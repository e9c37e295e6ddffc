"""A local Telegram Bot API on loopback that fails where the real one fails.

python-telegram-bot reaches it with ``ApplicationBuilder().base_url(f"{sandbox.url}/bot")``.
The bot side speaks the Bot API (checked against the spec, limits enforced, errors worded the
way Telegram words them); the user side is a Python API (and the same over HTTP under
``/sandbox/``) that plays the travellers: they send text, press buttons, block the bot.
Everything lives in memory and disappears with the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from bot.sandbox.control import add_control_routes
from bot.sandbox.errors import ApiError, SandboxError, SandboxTimeoutError
from bot.sandbox.formatting import check_link, command_entities, message_text
from bot.sandbox.models import (
    Button,
    CallbackQueryRecord,
    ChatMessage,
    EventKind,
    JsonDict,
    SandboxDocument,
    SandboxEvent,
    SandboxUser,
    UserAction,
)
from bot.sandbox.ratelimit import FloodControl, SandboxLimits
from bot.sandbox.spec import BotApiSpec, UploadedFile

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "123456789:SANDBOX-local-token-not-for-telegram"  # noqa: S105 - not a secret
_TOKEN_SHAPE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,100}$")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{0,256}$")
_COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
_MAX_BUTTONS = 100
_MAX_BUTTONS_PER_ROW = 8
_MAX_CALLBACK_DATA_BYTES = 64
_MAX_ANSWER_TEXT = 200
_MAX_USER_TEXT = 4096
_MAX_CAPTION = 1024
# setMyDescription / setMyShortDescription: Telegram's limits, in characters.
DESCRIPTION_LIMIT = 512
SHORT_DESCRIPTION_LIMIT = 120
_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
_QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_ALL_UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)
# Telegram leaves these out unless a bot asks for them by name.
_OPT_IN_UPDATE_TYPES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_SEND_EVENT_KINDS = frozenset(
    {EventKind.BOT_MESSAGE, EventKind.BOT_EDIT, EventKind.BOT_DELETE, EventKind.CALLBACK_ANSWERED}
)

Listener = Callable[[SandboxEvent], Awaitable[None] | None]


def _now() -> datetime:
    return datetime.now(UTC)


def _language(params: Mapping[str, Any]) -> str:
    return str(params.get("language_code") or "")


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


class _Signal:
    """Wakes every waiter whenever anything in the sandbox changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(seconds, 0.0))


@dataclass
class _Chat:
    user: SandboxUser
    chat_instance: str
    messages: dict[int, ChatMessage] = field(default_factory=dict)
    next_message_id: int = 1
    started: bool = False
    blocked: bool = False
    last_user_seq: int = 0


@dataclass
class _PendingUpdate:
    update_id: int
    kind: str
    chat_id: int | None
    payload: JsonDict
    delivered: bool = False
    delivering: bool = False


@dataclass
class _Webhook:
    url: str
    secret_token: str
    max_connections: int
    allowed_updates: tuple[str, ...] | None
    ip_address: str | None
    semaphore: asyncio.Semaphore


@dataclass(frozen=True)
class _Result:
    """A successful call's result, with the optional description Telegram adds (setWebhook)."""

    value: Any
    description: str | None = None


Handler = Callable[[dict[str, Any]], Awaitable[_Result]]


class SandboxBotApi:
    """The sandbox: a Bot API server for the bot, and a set of simulated users for tests.

    Construct it, ``await start()``, point PTB at ``f"{sandbox.url}/bot"``, drive users with
    ``add_user`` / ``user_sends`` / ``user_presses``, read what the bot did with ``transcript``
    and ``events``, and ``await stop()``. Rate limits are token buckets (burst, then a rate) per
    chat and for the whole bot; ``rate_limits=False`` turns them off.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        bot_username: str = "travelbot_sandbox_bot",
        *,
        bot_name: str = "Travel Bot (sandbox)",
        per_chat_burst: int = 20,
        per_chat_rate: float = 1.0,
        overall_burst: int = 50,
        overall_rate: float = 30.0,
        count_edits: bool = True,
        rate_limits: bool = True,
        callback_answer_timeout: float = 15.0,
        webhook_retries: int = 3,
        webhook_retry_delay: float = 0.2,
        webhook_timeout: float = 30.0,
        idle_quiet: float = 0.25,
        wait_timeout: float = 10.0,
        max_events: int = 100_000,
        spec: BotApiSpec | None = None,
    ) -> None:
        if not _TOKEN_SHAPE.match(token):
            raise ValueError("token must look like a Bot API token: <digits>:<letters, digits, _->")
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_username = bot_username
        self.bot_name = bot_name
        self.limits = SandboxLimits(
            per_chat_burst=per_chat_burst,
            per_chat_rate=per_chat_rate,
            overall_burst=overall_burst,
            overall_rate=overall_rate,
            count_edits=count_edits,
            enabled=rate_limits,
        )
        self.callback_answer_timeout = callback_answer_timeout
        self.webhook_retries = webhook_retries
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_timeout = webhook_timeout
        self.idle_quiet = idle_quiet
        self.wait_timeout = wait_timeout
        self.spec = spec or BotApiSpec.load()

        self._flood = FloodControl(self.limits)
        self._users: dict[int, SandboxUser] = {}
        self._chats: dict[int, _Chat] = {}
        self._events: deque[SandboxEvent] = deque(maxlen=max_events)
        self._seq = 0
        self._listeners: list[Listener] = []
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._callbacks: dict[str, CallbackQueryRecord] = {}
        self._files: dict[str, SandboxDocument] = {}
        self._callback_started: dict[str, float] = {}
        self._commands: dict[tuple[tuple[Any, ...], str], list[JsonDict]] = {}
        # (field, language_code) -> text: what a user sees in the bot's empty chat and profile
        self._profile_texts: dict[tuple[str, str], str] = {}
        self._queue: list[_PendingUpdate] = []
        self._next_update_id = 1
        self._allowed_updates: frozenset[str] = self._allowed(None)
        self._poll_generation = 0
        self._webhook: _Webhook | None = None
        self._webhook_targets: list[str] = []
        self._webhook_target_secret: str | None = None
        self._webhook_last_error: tuple[int, str] | None = None
        self._round_robin: Counter[int | None] = Counter()
        self._workers: dict[int | None, asyncio.Task[None]] = {}
        self._inflight: Counter[int | None] = Counter()
        self._last_activity: dict[int | None, float] = {}
        self._signal: _Signal | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._stopping = False
        self._next_user_id = 100_000_001
        self._handlers: dict[str, Handler] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "sendDocument": self._send_document,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "deleteMessage": self._delete_message,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "setMyDescription": self._set_my_description,
            "getMyDescription": self._get_my_description,
            "setMyShortDescription": self._set_my_short_description,
            "getMyShortDescription": self._get_my_short_description,
            "close": self._close,
            "logOut": self._log_out,
        }

    # ------------------------------------------------------------------ lifecycle

    def make_app(self) -> web.Application:
        """The aiohttp app: the Bot API under ``/bot<token>/``, control under ``/sandbox/``."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._bot_endpoint)
        add_control_routes(app, self)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the sandbox is already running")
        self._signal = _Signal()
        self._stopping = False
        self._session = aiohttp.ClientSession()
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._url = f"http://{shown_host}:{bound_port}"
        logger.info("sandbox Bot API listening on %s", self._url)
        return self._url

    async def stop(self) -> None:
        """Stop serving; pending long polls return, webhook deliveries are abandoned."""
        self._stopping = True
        self._fire()
        for task in list(self._workers.values()):
            task.cancel()
        for task in list(self._workers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        if self._listener_tasks:
            await asyncio.gather(*self._listener_tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._url = None

    async def __aenter__(self) -> SandboxBotApi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``; PTB's base_url is ``url + "/bot"``."""
        if self._url is None:
            raise RuntimeError("the sandbox is not running; await start() first")
        return self._url

    @property
    def base_url(self) -> str:
        """What to pass to ``ApplicationBuilder().base_url(...)``."""
        return f"{self.url}/bot"

    def bot_user(self) -> JsonDict:
        """The bot as a Bot API ``User``."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_name,
            "username": self.bot_username,
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def configure_limits(self, **changes: Any) -> SandboxLimits:
        """Change rate limits (fields of SandboxLimits); buckets start full again."""
        self.limits = dataclasses.replace(self.limits, **changes)
        self._flood.reconfigure(self.limits)
        return self.limits

    # ------------------------------------------------------------------ events and listeners

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every new event (it may be async); returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def _fire(self) -> None:
        if self._signal is not None:
            self._signal.fire()

    def _record(self, kind: EventKind, **fields: Any) -> SandboxEvent:
        self._seq += 1
        event = SandboxEvent(seq=self._seq, kind=kind, at=_now(), **fields)
        self._events.append(event)
        self._fire()
        for listener in list(self._listeners):
            try:
                outcome = listener(event)
            except Exception:
                logger.exception("sandbox listener failed on event %s", event.seq)
                continue
            if inspect.isawaitable(outcome):
                task = asyncio.ensure_future(outcome)
                self._listener_tasks.add(task)
                task.add_done_callback(self._listener_done)
        return event

    def _listener_done(self, task: asyncio.Task[None]) -> None:
        self._listener_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("sandbox listener failed", exc_info=task.exception())

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest event (0 before anything happened)."""
        return self._seq

    def events(
        self, since: int = 0, *, kinds: frozenset[EventKind] | set[EventKind] | None = None
    ) -> list[SandboxEvent]:
        """Events after ``since``, oldest first, optionally only some kinds."""
        found: list[SandboxEvent] = []
        for event in reversed(self._events):  # newest first, so a waiter only reads what is new
            if event.seq <= since:
                break
            if kinds is None or event.kind in kinds:
                found.append(event)
        found.reverse()
        return found

    def api_errors(self, since: int = 0) -> list[SandboxEvent]:
        """Bot API calls that failed (with Telegram's description in ``error``)."""
        return self.events(since, kinds={EventKind.API_ERROR})

    # ------------------------------------------------------------------ users (the client side)

    async def add_user(
        self,
        user_id: int | None = None,
        first_name: str = "Traveller",
        username: str | None = None,
        *,
        last_name: str | None = None,
        language_code: str | None = "en",
    ) -> SandboxUser:
        """A new Telegram user; their chat exists for the bot once they send something."""
        if user_id is None:
            while self._next_user_id in self._users:
                self._next_user_id += 1
            user_id = self._next_user_id
            self._next_user_id += 1
        if user_id <= 0 or user_id == self.bot_id:
            raise SandboxError(f"user id {user_id} is not a usable Telegram user id")
        if user_id in self._users:
            raise SandboxError(f"user {user_id} already exists")
        if not first_name.strip():
            raise SandboxError("a Telegram user needs a non-empty first name")
        user = SandboxUser(
            id=user_id,
            first_name=first_name,
            username=username,
            last_name=last_name,
            language_code=language_code,
        )
        self._users[user_id] = user
        self._chats[user_id] = _Chat(user=user, chat_instance=str(secrets.randbits(62)))
        return user

    def users(self) -> list[SandboxUser]:
        return list(self._users.values())

    def user(self, user_id: int) -> SandboxUser:
        try:
            return self._users[user_id]
        except KeyError:
            raise SandboxError(f"no user {user_id}; add_user() first") from None

    async def user_sends(self, user_id: int, text: str) -> UserAction:
        """The user types ``text``; commands get a bot_command entity, as Telegram marks them.

        Text longer than 4096 characters is split into several messages, as clients do.
        """
        user = self.user(user_id)
        chat = self._chats[user_id]
        if chat.blocked:
            raise SandboxError(f"user {user_id} has blocked the bot; user_unblocks_bot() first")
        if not text or not text.strip():
            raise SandboxError("Telegram clients cannot send an empty message")
        _require_utf8(text)
        parts = [
            part
            for start in range(0, len(text), _MAX_USER_TEXT)
            if (part := text[start : start + _MAX_USER_TEXT]).strip()
        ]
        chat.started = True
        updates: list[JsonDict] = []
        seq = 0
        for part in parts:
            date = _now()
            message_id = chat.next_message_id
            chat.next_message_id += 1
            entities = command_entities(part)
            payload: JsonDict = {
                "message_id": message_id,
                "from": user.to_telegram(),
                "chat": user.to_chat(),
                "date": _unix(date),
                "text": part,
            }
            if entities:
                payload["entities"] = entities
            seq = self._seq + 1
            message = ChatMessage(
                chat_id=user.id,
                message_id=message_id,
                from_bot=False,
                text=part,
                html=_escape(part),
                date=date,
                seq=seq,
                changed_seq=seq,
                entities=tuple(entities),
            )
            chat.messages[message_id] = message
            self._record(
                EventKind.USER_MESSAGE, chat_id=user.id, message_id=message_id, message=message
            )
            updates.append(self._enqueue("message", user.id, {"message": payload}))
        chat.last_user_seq = seq
        return UserAction(seq=seq, chat_id=user.id, updates=tuple(updates))

    async def user_presses(self, user_id: int, message_id: int, callback_data: str) -> UserAction:
        """The user presses the button carrying ``callback_data`` on that bot message."""
        message = self._pressable(user_id, message_id)
        if not any(button.callback_data == callback_data for button in message.flat_buttons):
            shown = [(button.label, button.callback_data) for button in message.flat_buttons]
            raise SandboxError(
                f"message {message_id} has no button with callback data {callback_data!r}; "
                f"its buttons are {shown}"
            )
        return self._press(user_id, message, callback_data)

    async def user_presses_label(
        self, user_id: int, label: str, message_id: int | None = None
    ) -> UserAction:
        """Press a button by its label, on ``message_id`` or the newest bot message showing it."""
        chat = self._chat_of_user(user_id)
        candidates = (
            [self._pressable(user_id, message_id)]
            if message_id is not None
            else [
                message
                for message in reversed(list(chat.messages.values()))
                if message.from_bot and not message.deleted
            ]
        )
        for message in candidates:
            for button in message.flat_buttons:
                if button.label == label:
                    if button.callback_data is None:
                        raise SandboxError(
                            f"button {label!r} opens {button.url}; it sends no update"
                        )
                    return self._press(user_id, message, button.callback_data)
        raise SandboxError(f"no button labelled {label!r} in chat {user_id}")

    async def user_presses_raw(
        self, user_id: int, message_id: int, callback_data: str
    ) -> UserAction:
        """A modified client sends ``callback_data`` for a bot message whatever its buttons say.

        Telegram still caps callback data at 1-64 bytes, so longer data cannot be forged either.
        """
        message = self._pressable(user_id, message_id)
        size = len(_require_utf8(callback_data))
        if not 1 <= size <= _MAX_CALLBACK_DATA_BYTES:
            raise SandboxError(f"callback data must be 1-64 bytes, got {size}")
        return self._press(user_id, message, callback_data)

    def _chat_of_user(self, user_id: int) -> _Chat:
        self.user(user_id)
        return self._chats[user_id]

    def _pressable(self, user_id: int, message_id: int) -> ChatMessage:
        chat = self._chat_of_user(user_id)
        if chat.blocked:
            raise SandboxError(f"user {user_id} has blocked the bot; user_unblocks_bot() first")
        message = chat.messages.get(message_id)
        if message is None or not message.from_bot:
            raise SandboxError(f"there is no bot message {message_id} in chat {user_id}")
        if message.deleted:
            raise SandboxError(f"message {message_id} in chat {user_id} was deleted")
        return message

    def _press(self, user_id: int, message: ChatMessage, callback_data: str) -> UserAction:
        chat = self._chats[user_id]
        query_id = str(secrets.randbits(63))
        created = _now()
        event = self._record(
            EventKind.USER_CALLBACK,
            chat_id=user_id,
            message_id=message.message_id,
            detail={"callback_query_id": query_id, "data": callback_data},
        )
        self._callbacks[query_id] = CallbackQueryRecord(
            id=query_id,
            user_id=user_id,
            chat_id=user_id,
            message_id=message.message_id,
            data=callback_data,
            created_at=created,
        )
        self._callback_started[query_id] = time.monotonic()
        chat.last_user_seq = event.seq
        update = self._enqueue(
            "callback_query",
            user_id,
            {
                "callback_query": {
                    "id": query_id,
                    "from": chat.user.to_telegram(),
                    "message": self._message_payload(message),
                    "chat_instance": chat.chat_instance,
                    "data": callback_data,
                }
            },
        )
        return UserAction(seq=event.seq, chat_id=user_id, updates=(update,))

    async def user_blocks_bot(self, user_id: int) -> UserAction:
        """The user blocks the bot: sends to them now fail with 403, the bot gets my_chat_member."""
        return self._set_blocked(user_id, blocked=True)

    async def user_unblocks_bot(self, user_id: int) -> UserAction:
        return self._set_blocked(user_id, blocked=False)

    def _set_blocked(self, user_id: int, *, blocked: bool) -> UserAction:
        chat = self._chat_of_user(user_id)
        if chat.blocked == blocked:
            raise SandboxError(
                f"user {user_id} has {'already' if blocked else 'not'} blocked the bot"
            )
        chat.blocked = blocked
        chat.started = True
        kind = EventKind.USER_BLOCKED if blocked else EventKind.USER_UNBLOCKED
        event = self._record(kind, chat_id=user_id)
        chat.last_user_seq = event.seq
        bot = self.bot_user()
        member = {"user": bot, "status": "member"}
        kicked = {"user": bot, "status": "kicked", "until_date": 0}
        update = self._enqueue(
            "my_chat_member",
            user_id,
            {
                "my_chat_member": {
                    "chat": chat.user.to_chat(),
                    "from": chat.user.to_telegram(),
                    "date": _unix(_now()),
                    "old_chat_member": member if blocked else kicked,
                    "new_chat_member": kicked if blocked else member,
                }
            },
        )
        return UserAction(seq=event.seq, chat_id=user_id, updates=(update,))

    # ------------------------------------------------------------------ reading chats

    def transcript(self, chat_id: int, *, include_user: bool = True) -> list[ChatMessage]:
        """Every message of the chat in order (deleted ones flagged), as it stands now."""
        chat = self._chats.get(chat_id)
        if chat is None:
            raise SandboxError(f"no chat {chat_id}")
        return [m for m in chat.messages.values() if include_user or m.from_bot]

    def bot_messages(self, chat_id: int) -> list[ChatMessage]:
        return self.transcript(chat_id, include_user=False)

    def last_bot_message(self, chat_id: int) -> ChatMessage:
        """The newest bot message still in the chat."""
        for message in reversed(self.bot_messages(chat_id)):
            if not message.deleted:
                return message
        raise SandboxError(f"the bot has sent nothing to chat {chat_id}")

    def message(self, chat_id: int, message_id: int) -> ChatMessage:
        chat = self._chats.get(chat_id)
        message = chat.messages.get(message_id) if chat is not None else None
        if message is None:
            raise SandboxError(f"no message {message_id} in chat {chat_id}")
        return message

    def messages_since(self, chat_id: int, since: int) -> list[ChatMessage]:
        """Bot messages sent, edited or deleted after event ``since``."""
        return [m for m in self.bot_messages(chat_id) if m.changed_seq > since]

    def callback_queries(self) -> list[CallbackQueryRecord]:
        return list(self._callbacks.values())

    def unanswered_callback_queries(self) -> list[CallbackQueryRecord]:
        return [record for record in self._callbacks.values() if not record.answered]

    def all_callbacks_answered(self) -> bool:
        return all(record.answered for record in self._callbacks.values())

    def profile_text(self, field: str, language_code: str = "") -> str:
        """The bot's ``description`` or ``short_description`` a user with that language sees."""
        return self._profile_texts.get(
            (field, language_code), self._profile_texts.get((field, ""), "")
        )

    def commands(self, scope: JsonDict | None = None, language_code: str = "") -> list[JsonDict]:
        """Commands stored for exactly this scope and language (what getMyCommands returns)."""
        return list(self._commands.get((self._scope_key(scope), language_code), []))

    def commands_for(self, chat_id: int, language_code: str = "") -> list[JsonDict]:
        """The menu a user in ``chat_id`` sees: chat scope, then all private chats, then default."""
        for scope in (("chat", chat_id), ("all_private_chats",), ("default",)):
            for language in (language_code, ""):
                found = self._commands.get((scope, language))
                if found:
                    return list(found)
        return []

    def pending_updates(self) -> int:
        """Updates not yet handed to the bot."""
        return sum(1 for item in self._queue if not item.delivered)

    @property
    def webhook_url(self) -> str | None:
        return self._webhook.url if self._webhook is not None else None

    # ------------------------------------------------------------------ waiting

    async def wait_for_event(
        self,
        predicate: Callable[[SandboxEvent], bool],
        *,
        since: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> SandboxEvent:
        """The first event after ``since`` (default: now) matching ``predicate``."""
        signal = self._require_signal()
        checked = self._seq if since is None else since
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        while True:
            for event in self.events(checked):
                if predicate(event):
                    return event
            checked = self._seq
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxTimeoutError(f"no matching event after seq {since} within the timeout")
            await signal.wait(remaining)

    async def wait_for_messages(
        self,
        chat_id: int,
        count: int = 1,
        *,
        since: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> list[ChatMessage]:
        """Wait until the bot has sent ``count`` new messages to the chat; returns them.

        New means after event ``since``; by default after the user's latest action in the chat.
        """
        signal = self._require_signal()
        chat = self._chats.get(chat_id)
        if chat is None:
            raise SandboxError(f"no chat {chat_id}")
        start = chat.last_user_seq if since is None else since
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        while True:
            sent = [m for m in chat.messages.values() if m.from_bot and m.seq > start]
            if len(sent) >= count:
                return sent
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxTimeoutError(
                    f"chat {chat_id}: expected {count} new bot message(s) after seq {start}, "
                    f"got {len(sent)}: {[m.text[:60] for m in sent]}; "
                    f"API errors: {[e.error for e in self.api_errors(start)]}"
                )
            await signal.wait(remaining)

    async def wait_idle(
        self,
        chat_id: int | None = None,
        *,
        quiet: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> None:
        """Wait until the bot is done with the chat (or with everything when ``chat_id`` is None).

        Done means: every update was handed over, no Bot API call for it is in progress, and
        nothing happened for ``quiet`` seconds. The bot's work between calls is invisible from
        here, so for a reply that takes long, prefer wait_for_messages or wait_for_reply.
        """
        signal = self._require_signal()
        quiet = self.idle_quiet if quiet is None else quiet
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        while True:
            now = time.monotonic()
            busy = self._busy(chat_id)
            pause = deadline - now
            if busy is None:
                idle_for = now - self._last_active(chat_id)
                if idle_for >= quiet:
                    return
                pause = min(pause, quiet - idle_for)
            if deadline - now <= 0:
                raise SandboxTimeoutError(
                    f"chat {chat_id} is not idle: {busy or 'recent activity'}"
                )
            await signal.wait(pause)

    async def wait_for_reply(
        self,
        action: UserAction,
        *,
        quiet: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> list[ChatMessage]:
        """Wait for the bot to react to ``action`` and settle; returns bot messages it touched.

        Reacting means sending, editing or deleting a message, answering the callback query,
        or failing a call for that chat.
        """
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)

        def reacted(event: SandboxEvent) -> bool:
            return event.chat_id == action.chat_id and (
                event.kind in _SEND_EVENT_KINDS or event.kind == EventKind.API_ERROR
            )

        await self.wait_for_event(reacted, since=action.seq, timeout=deadline - time.monotonic())
        await self.wait_idle(
            action.chat_id, quiet=quiet, timeout=max(deadline - time.monotonic(), 0.0)
        )
        return self.messages_since(action.chat_id, action.seq)

    def _require_signal(self) -> _Signal:
        if self._signal is None:
            raise RuntimeError("the sandbox is not running; await start() first")
        return self._signal

    def _busy(self, chat_id: int | None) -> str | None:
        for item in self._queue:
            if (chat_id is None or item.chat_id == chat_id) and not item.delivered:
                return f"update {item.update_id} not yet handed to the bot"
        if chat_id is None:
            if any(count > 0 for count in self._inflight.values()):
                return "a Bot API call is in progress"
        elif self._inflight[chat_id] > 0:
            return "a Bot API call for the chat is in progress"
        return None

    def _last_active(self, chat_id: int | None) -> float:
        if chat_id is None:
            return max(self._last_activity.values(), default=0.0)
        return self._last_activity.get(chat_id, 0.0)

    def _touch(self, chat_id: int | None) -> None:
        self._last_activity[chat_id] = time.monotonic()

    # ------------------------------------------------------------------ update delivery

    @staticmethod
    def _allowed(requested: list[str] | tuple[str, ...] | None) -> frozenset[str]:
        if requested:
            return frozenset(requested)
        return frozenset(_ALL_UPDATE_TYPES) - _OPT_IN_UPDATE_TYPES

    def _enqueue(self, kind: str, chat_id: int | None, body: JsonDict) -> JsonDict:
        update_id = self._next_update_id
        self._next_update_id += 1
        payload = {"update_id": update_id, **body}
        if kind not in self._allowed_updates:
            return payload  # Telegram does not even produce updates the bot did not ask for
        self._queue.append(_PendingUpdate(update_id, kind, chat_id, payload))
        self._touch(chat_id)
        self._fire()
        self._kick_delivery()
        return payload

    def _kick_delivery(self) -> None:
        if self._webhook is None or self._stopping or self._signal is None:
            return
        for item in self._queue:
            if not item.delivered and item.chat_id not in self._workers:
                self._workers[item.chat_id] = asyncio.create_task(
                    self._deliver_chat(item.chat_id), name=f"sandbox-webhook-{item.chat_id}"
                )

    async def _deliver_chat(self, chat_id: int | None) -> None:
        """Deliver one chat's updates in order: the next only after the previous got an answer."""
        try:
            while self._webhook is not None and not self._stopping:
                item = next(
                    (u for u in self._queue if u.chat_id == chat_id and not u.delivered), None
                )
                if item is None:
                    return
                async with self._webhook.semaphore:
                    await self._deliver(item)
        finally:
            if self._workers.get(chat_id) is asyncio.current_task():
                del self._workers[chat_id]

    def _next_target(self, webhook: _Webhook, chat_id: int | None) -> str:
        """Targets rotate per chat, so one chat's updates alternate between the workers."""
        targets = self._webhook_targets or [webhook.url]
        target = targets[self._round_robin[chat_id] % len(targets)]
        self._round_robin[chat_id] += 1
        return target

    async def _deliver(self, item: _PendingUpdate) -> None:
        item.delivering = True
        self._fire()
        try:
            for attempt in range(1, self.webhook_retries + 2):
                webhook = self._webhook
                if webhook is None or self._stopping:
                    return
                target = self._next_target(webhook, item.chat_id)
                secret = self._webhook_target_secret or webhook.secret_token
                status, problem, body = await self._post_update(target, secret, item.payload)
                if status is not None and 200 <= status < 300:
                    await self._run_webhook_reply(body)
                    item.delivered = True
                    self._remove_update(item)
                    self._touch(item.chat_id)
                    self._record(
                        EventKind.UPDATE_DELIVERED,
                        chat_id=item.chat_id,
                        update_id=item.update_id,
                        detail={"target": target, "status": status, "attempt": attempt},
                    )
                    return
                self._webhook_last_error = (_unix(_now()), problem)
                self._record(
                    EventKind.DELIVERY_FAILED,
                    chat_id=item.chat_id,
                    update_id=item.update_id,
                    error=problem,
                    detail={"target": target, "status": status, "attempt": attempt},
                )
                if attempt <= self.webhook_retries:
                    await asyncio.sleep(self.webhook_retry_delay * 2 ** (attempt - 1))
            self._remove_update(item)
            self._record(
                EventKind.DELIVERY_FAILED,
                chat_id=item.chat_id,
                update_id=item.update_id,
                error="update dropped after repeated webhook failures",
                detail={"dropped": True},
            )
        finally:
            item.delivering = False
            self._fire()

    async def _post_update(
        self, target: str, secret: str, payload: JsonDict
    ) -> tuple[int | None, str, bytes]:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        try:
            async with self._session.post(
                target,
                data=json.dumps(payload),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.webhook_timeout),
            ) as response:
                body = await response.read()
                return (
                    response.status,
                    f"Wrong response from the webhook: {response.status} {response.reason}",
                    body,
                )
        except aiohttp.ClientConnectorError:
            return None, "Connection refused", b""
        except TimeoutError:
            return None, "Read timeout expired", b""
        except aiohttp.ClientError as error:
            return None, f"Connection failed: {error.__class__.__name__}", b""

    async def _run_webhook_reply(self, body: bytes) -> None:
        """Run the Bot API method a bot may put in its answer to a webhook delivery.

        Telegram does this for a JSON answer with a ``method`` field (one call, its result never
        reaches the bot); a mistake in it is recorded as an API error, like any other call's.
        """
        try:
            reply = json.loads(body)
        except ValueError:
            return
        if not isinstance(reply, dict) or not isinstance(reply.get("method"), str):
            return
        raw = {key: value for key, value in reply.items() if key != "method"}
        method = self.spec.canonical_method(reply["method"])
        chat_key = self._chat_key(raw)
        try:
            handler = self._handlers.get(method or "")
            if method is None or handler is None or method == "getUpdates":
                raise ApiError.not_found()
            await handler(self.spec.check_call(method, raw))
        except ApiError as error:
            self._record(
                EventKind.API_ERROR,
                method=method or reply["method"],
                chat_id=chat_key,
                error=error.description,
            )

    def _remove_update(self, item: _PendingUpdate) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(item)

    async def set_webhook_targets(self, urls: list[str], secret_token: str | None = None) -> None:
        """Deliver webhook updates round-robin to ``urls`` instead of the URL the bot set.

        Stands in for a load balancer in front of several workers: each delivery attempt for a
        chat goes to the next target, so one chat's updates alternate between the workers and
        a dead worker's updates are retried on the others. One chat's updates stay in order. An empty list goes back to the bot's own URL. ``secret_token`` overrides
        the secret the bot registered.
        """
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise SandboxError(f"webhook target {url!r} must be an http(s) URL")
        self._webhook_targets = list(urls)
        self._webhook_target_secret = secret_token
        self._round_robin.clear()
        self._kick_delivery()

    # ------------------------------------------------------------------ the Bot API endpoint

    async def _bot_endpoint(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method_name = request.match_info["method"]
        if not _TOKEN_SHAPE.match(token):
            return _reply(ApiError.not_found().payload(), 404)
        if token != self.token:
            self._record(EventKind.API_ERROR, method=method_name, error="Unauthorized")
            return _reply(ApiError(401, "Unauthorized").payload(), 401)
        method = self.spec.canonical_method(method_name)
        if method is None:
            self._record(EventKind.API_ERROR, method=method_name, error="Not Found")
            return _reply(ApiError.not_found().payload(), 404)
        chat_key: int | None = None
        tracked = method != "getUpdates"
        try:
            raw = await _read_params(request)
            chat_key = self._chat_key(raw)  # known before the check, so a failed call is attributed
            params = self.spec.check_call(method, raw)
            if tracked:
                self._inflight[chat_key] += 1
                self._touch(chat_key)
                self._fire()
            try:
                handler = self._handlers.get(method)
                if handler is None:
                    raise ApiError.bad_request(f"method {method} is not available in the sandbox")
                result = await handler(params)
            finally:
                if tracked:
                    self._inflight[chat_key] -= 1
                    self._touch(chat_key)
                    self._fire()
        except ApiError as error:
            abandoned = request.transport is None or request.transport.is_closing()
            if not (method == "getUpdates" and abandoned):
                # a long poll the bot already gave up on (it stopped polling) is not its error
                self._record(
                    EventKind.API_ERROR, method=method, chat_id=chat_key, error=error.description
                )
            return _reply(error.payload(), error.error_code)
        body: JsonDict = {"ok": True, "result": result.value}
        if result.description:
            body["description"] = result.description
        return _reply(body, 200)

    def _chat_key(self, params: Mapping[str, object]) -> int | None:
        chat_id = params.get("chat_id")
        if isinstance(chat_id, int) and not isinstance(chat_id, bool):
            return chat_id
        if isinstance(chat_id, str) and re.fullmatch(r"-?\d{1,20}", chat_id.strip()):
            return int(chat_id)
        query_id = params.get("callback_query_id")
        if isinstance(query_id, str) and query_id in self._callbacks:
            return self._callbacks[query_id].chat_id
        return None

    def _chat(self, chat_id: Any, *, sending: bool = False) -> _Chat:
        chat = self._chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None or not chat.started:
            raise ApiError.bad_request("chat not found")
        if sending and chat.blocked:
            raise ApiError.forbidden("bot was blocked by the user")
        return chat

    def _take_send_slot(self, chat_id: int) -> None:
        retry_after = self._flood.acquire(chat_id)
        if retry_after:
            raise ApiError.retry_after(retry_after)

    # ------------------------------------------------------------------ Bot API methods

    async def _get_me(self, params: dict[str, Any]) -> _Result:
        return _Result(self.bot_user())

    async def _get_updates(self, params: dict[str, Any]) -> _Result:
        if self._webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        signal = self._require_signal()
        self._poll_generation += 1
        generation = self._poll_generation
        self._fire()  # an older long poll learns it was replaced
        if "allowed_updates" in params:
            self._allowed_updates = self._allowed(params["allowed_updates"])
        offset = params.get("offset")
        if offset is not None:
            if offset < 0:
                self._queue = self._queue[offset:]
            else:
                self._queue = [item for item in self._queue if item.update_id >= offset]
        limit = min(max(params.get("limit", 100), 1), 100)
        deadline = time.monotonic() + max(params.get("timeout", 0), 0)
        while True:
            if generation != self._poll_generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one "
                    "bot instance is running",
                )
            if self._webhook is not None:
                raise ApiError(409, "Conflict: terminated by setWebhook request")
            ready = self._queue[:limit]
            remaining = deadline - time.monotonic()
            if ready or remaining <= 0 or self._stopping:
                break
            await signal.wait(remaining)
        for item in ready:
            if not item.delivered:
                item.delivered = True
                self._touch(item.chat_id)
                self._record(
                    EventKind.UPDATE_DELIVERED,
                    chat_id=item.chat_id,
                    update_id=item.update_id,
                    detail={"target": "getUpdates"},
                )
        return _Result([item.payload for item in ready])

    async def _set_webhook(self, params: dict[str, Any]) -> _Result:
        url = params.get("url", "")
        if not url:
            return await self._delete_webhook(params)
        if not re.match(r"^https?://[^/\s]+", url, re.IGNORECASE):
            raise ApiError.bad_request("invalid webhook URL specified")
        secret = params.get("secret_token", "")
        if len(secret) > 256:
            raise ApiError.bad_request("secret token is too long")
        if not _WEBHOOK_SECRET.match(secret):
            raise ApiError.bad_request("secret token contains unallowed characters")
        max_connections = min(max(params.get("max_connections", 40), 1), 100)
        allowed = params.get("allowed_updates")
        if params.get("drop_pending_updates"):
            self._drop_pending()
        previous = self._webhook
        same = (
            previous is not None
            and previous.url == url
            and previous.secret_token == secret
            and previous.max_connections == max_connections
            and (allowed is None or tuple(allowed) == previous.allowed_updates)
            and not params.get("drop_pending_updates")
        )
        if same:
            return _Result(True, "Webhook is already set")
        self._webhook = _Webhook(
            url=url,
            secret_token=secret,
            max_connections=max_connections,
            allowed_updates=tuple(allowed) if allowed is not None else None,
            ip_address=params.get("ip_address"),
            semaphore=asyncio.Semaphore(max_connections),
        )
        if allowed is not None:
            self._allowed_updates = self._allowed(allowed)
        self._webhook_last_error = None
        self._fire()  # a waiting getUpdates is terminated
        self._kick_delivery()
        return _Result(True, "Webhook was set")

    async def _delete_webhook(self, params: dict[str, Any]) -> _Result:
        if params.get("drop_pending_updates"):
            self._drop_pending()
        if self._webhook is None:
            return _Result(True, "Webhook is already deleted")
        self._webhook = None
        return _Result(True, "Webhook was deleted")

    def _drop_pending(self) -> None:
        self._queue = [item for item in self._queue if item.delivering]
        self._fire()

    async def _get_webhook_info(self, params: dict[str, Any]) -> _Result:
        info: JsonDict = {
            "url": self._webhook.url if self._webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": self.pending_updates(),
        }
        if self._webhook is not None:
            info["max_connections"] = self._webhook.max_connections
            if self._webhook.ip_address:
                info["ip_address"] = self._webhook.ip_address
            if self._webhook.allowed_updates is not None:
                info["allowed_updates"] = list(self._webhook.allowed_updates)
            if self._webhook_last_error is not None:
                info["last_error_date"], info["last_error_message"] = self._webhook_last_error
        return _Result(info)

    async def _send_message(self, params: dict[str, Any]) -> _Result:
        chat = self._chat(params["chat_id"], sending=True)
        text, entities = message_text(
            params["text"], params.get("parse_mode"), params.get("entities")
        )
        return self._post_bot_message(
            chat, params, text=text, html=_source_html(params), entities=entities
        )

    def _post_bot_message(
        self,
        chat: _Chat,
        params: dict[str, Any],
        *,
        text: str,
        html: str,
        entities: list[JsonDict],
        document: SandboxDocument | None = None,
    ) -> _Result:
        """A new bot message in ``chat`` (sendMessage, sendDocument): its markup and reply
        target read from ``params``, the chat's send limit taken, then stored and recorded."""
        inline, buttons, reply_keyboard = _read_markup(params.get("reply_markup"))
        reply_to = self._reply_target(chat, params.get("reply_parameters"))
        self._take_send_slot(chat.user.id)
        message_id = chat.next_message_id
        chat.next_message_id += 1
        seq = self._seq + 1
        message = ChatMessage(
            chat_id=chat.user.id,
            message_id=message_id,
            from_bot=True,
            text=text,
            html=html,
            date=_now(),
            seq=seq,
            changed_seq=seq,
            entities=tuple(entities),
            buttons=buttons,
            reply_to_message_id=reply_to,
            reply_keyboard=reply_keyboard,
            reply_markup=inline,
            document=document,
        )
        chat.messages[message_id] = message
        if document is not None:
            self._files[document.file_id] = document
        self._record(
            EventKind.BOT_MESSAGE, chat_id=chat.user.id, message_id=message_id, message=message
        )
        return _Result(self._message_payload(message))

    async def _send_document(self, params: dict[str, Any]) -> _Result:
        chat = self._chat(params["chat_id"], sending=True)
        document = self._document(params["document"])
        text = ""
        entities: list[JsonDict] = []
        if params.get("caption"):
            text, entities = message_text(
                params["caption"], params.get("parse_mode"), params.get("caption_entities")
            )
            if len(text) > _MAX_CAPTION:
                raise ApiError.bad_request("message caption is too long")
        return self._post_bot_message(
            chat,
            params,
            text=text,
            html=params.get("caption") or "",
            entities=entities,
            document=document,
        )

    def _document(self, value: object) -> SandboxDocument:
        """An uploaded file becomes a new document; a string names one sent before."""
        if isinstance(value, UploadedFile):
            if not value.content:
                raise ApiError.bad_request("file must be non-empty")
            return SandboxDocument(
                file_id=f"BQAC{secrets.token_urlsafe(24)}",
                file_unique_id=f"AgAD{secrets.token_urlsafe(8)}",
                file_name=value.filename,
                mime_type=value.content_type,
                content=value.content,
            )
        known = self._files.get(value) if isinstance(value, str) else None
        if known is None:
            raise ApiError.bad_request("wrong file identifier/HTTP URL specified")
        return known

    def _reply_target(self, chat: _Chat, reply: JsonDict | None) -> int | None:
        if not reply:
            return None
        target_chat = reply.get("chat_id", chat.user.id)
        target = chat.messages.get(reply["message_id"]) if target_chat == chat.user.id else None
        if target is not None and not target.deleted:
            return target.message_id
        if reply.get("allow_sending_without_reply"):
            return None
        raise ApiError.bad_request("message to be replied not found")

    def _editable(self, params: dict[str, Any]) -> tuple[_Chat, ChatMessage]:
        if params.get("inline_message_id"):
            raise ApiError.bad_request("MESSAGE_ID_INVALID")
        if "chat_id" not in params:
            raise ApiError.bad_request("chat_id is empty")
        if "message_id" not in params:
            raise ApiError.bad_request("message identifier is not specified")
        chat = self._chat(params["chat_id"])
        message = chat.messages.get(params["message_id"])
        if message is None or message.deleted:
            raise ApiError.bad_request("message to edit not found")
        if not message.from_bot:
            raise ApiError.bad_request("message can't be edited")
        return chat, message

    async def _edit_message_text(self, params: dict[str, Any]) -> _Result:
        chat, message = self._editable(params)
        text, entities = message_text(
            params["text"], params.get("parse_mode"), params.get("entities")
        )
        inline, buttons, _ = _read_markup(params.get("reply_markup"), inline_only=True)
        if (
            text == message.text
            and tuple(entities) == message.entities
            and inline == message.reply_markup
        ):
            raise ApiError.bad_request(_NOT_MODIFIED)
        if self.limits.count_edits:
            self._take_send_slot(chat.user.id)
        edited = self._store_edit(
            chat,
            message,
            text=text,
            html=_source_html(params),
            entities=tuple(entities),
            buttons=buttons,
            reply_markup=inline,
        )
        return _Result(self._message_payload(edited))

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> _Result:
        chat, message = self._editable(params)
        inline, buttons, _ = _read_markup(params.get("reply_markup"), inline_only=True)
        if inline == message.reply_markup:
            raise ApiError.bad_request(_NOT_MODIFIED)
        if self.limits.count_edits:
            self._take_send_slot(chat.user.id)
        edited = self._store_edit(chat, message, buttons=buttons, reply_markup=inline)
        return _Result(self._message_payload(edited))

    def _store_edit(self, chat: _Chat, message: ChatMessage, **changes: Any) -> ChatMessage:
        edited = dataclasses.replace(
            message,
            edit_count=message.edit_count + 1,
            edit_date=_now(),
            changed_seq=self._seq + 1,
            **changes,
        )
        chat.messages[message.message_id] = edited
        self._record(
            EventKind.BOT_EDIT, chat_id=chat.user.id, message_id=message.message_id, message=edited
        )
        return edited

    async def _delete_message(self, params: dict[str, Any]) -> _Result:
        chat = self._chat(params["chat_id"])
        message = chat.messages.get(params["message_id"])
        if message is None or message.deleted:
            raise ApiError.bad_request("message to delete not found")
        deleted = dataclasses.replace(message, deleted=True, changed_seq=self._seq + 1)
        chat.messages[message.message_id] = deleted
        self._record(
            EventKind.BOT_DELETE,
            chat_id=chat.user.id,
            message_id=message.message_id,
            message=deleted,
        )
        return _Result(True)

    async def _answer_callback_query(self, params: dict[str, Any]) -> _Result:
        query_id = params["callback_query_id"]
        record = self._callbacks.get(query_id)
        started = self._callback_started.get(query_id, 0.0)
        if (
            record is None
            or record.answered
            or time.monotonic() - started > self.callback_answer_timeout
        ):
            raise ApiError.bad_request(_QUERY_TOO_OLD)
        text = params.get("text")
        if text is not None and len(text) > _MAX_ANSWER_TEXT:
            raise ApiError.bad_request("MESSAGE_TOO_LONG")
        answered = dataclasses.replace(
            record,
            answered=True,
            answered_at=_now(),
            answer_text=text,
            show_alert=bool(params.get("show_alert", False)),
        )
        self._callbacks[query_id] = answered
        self._record(
            EventKind.CALLBACK_ANSWERED,
            chat_id=record.chat_id,
            message_id=record.message_id,
            detail={"callback_query_id": query_id, "text": text, "show_alert": answered.show_alert},
        )
        return _Result(True)

    async def _send_chat_action(self, params: dict[str, Any]) -> _Result:
        chat = self._chat(params["chat_id"], sending=True)
        action = params["action"]
        if action not in _CHAT_ACTIONS:
            raise ApiError.bad_request("wrong parameter action in request")
        self._record(EventKind.CHAT_ACTION, chat_id=chat.user.id, detail={"action": action})
        return _Result(True)

    def _scope_key(self, scope: JsonDict | None) -> tuple[Any, ...]:
        if not scope:
            return ("default",)
        kind = scope["type"]
        if kind in ("chat", "chat_administrators", "chat_member"):
            chat_id = scope["chat_id"]
            if isinstance(chat_id, str) or chat_id not in self._chats:
                raise ApiError.bad_request("chat not found")
            if kind == "chat_member":
                return (kind, chat_id, scope["user_id"])
            return (kind, chat_id)
        return (kind,)

    async def _set_my_commands(self, params: dict[str, Any]) -> _Result:
        commands = params["commands"]
        if len(commands) > 100:
            raise ApiError.bad_request("BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if not _COMMAND_NAME.match(command["command"]):
                raise ApiError.bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(command["description"].strip()) <= 256:
                raise ApiError.bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = (self._scope_key(params.get("scope")), params.get("language_code", ""))
        stored = [{"command": c["command"], "description": c["description"]} for c in commands]
        if stored:
            self._commands[key] = stored
        else:
            self._commands.pop(key, None)
        self._record(EventKind.API_CALL, method="setMyCommands", detail={"scope": list(key[0])})
        return _Result(True)

    async def _get_my_commands(self, params: dict[str, Any]) -> _Result:
        key = (self._scope_key(params.get("scope")), params.get("language_code", ""))
        return _Result(list(self._commands.get(key, [])))

    async def _delete_my_commands(self, params: dict[str, Any]) -> _Result:
        key = (self._scope_key(params.get("scope")), params.get("language_code", ""))
        self._commands.pop(key, None)
        self._record(EventKind.API_CALL, method="deleteMyCommands", detail={"scope": list(key[0])})
        return _Result(True)

    async def _set_my_description(self, params: dict[str, Any]) -> _Result:
        return self._set_profile_text("description", params, DESCRIPTION_LIMIT)

    async def _set_my_short_description(self, params: dict[str, Any]) -> _Result:
        return self._set_profile_text("short_description", params, SHORT_DESCRIPTION_LIMIT)

    async def _get_my_description(self, params: dict[str, Any]) -> _Result:
        return _Result({"description": self.profile_text("description", _language(params))})

    async def _get_my_short_description(self, params: dict[str, Any]) -> _Result:
        text = self.profile_text("short_description", _language(params))
        return _Result({"short_description": text})

    def _set_profile_text(self, field: str, params: dict[str, Any], limit: int) -> _Result:
        """Telegram's rules: 0 to ``limit`` characters, empty removes the text for that language
        (a user then sees the default one), language codes are two letters."""
        text = params.get(field) or ""
        if not isinstance(text, str):
            raise ApiError.bad_request(f'field "{field}" must be of type String')
        language = _language(params)
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise ApiError.bad_request("invalid language code specified")
        if len(text) > limit:
            raise ApiError.bad_request(f"{field.replace('_', ' ')} is too long")
        if text:
            self._profile_texts[(field, language)] = text
        else:
            self._profile_texts.pop((field, language), None)
        method = "setMyDescription" if field == "description" else "setMyShortDescription"
        self._record(EventKind.API_CALL, method=method, detail={"language_code": language})
        return _Result(True)

    async def _close(self, params: dict[str, Any]) -> _Result:
        self._record(EventKind.API_CALL, method="close")
        return _Result(True)

    async def _log_out(self, params: dict[str, Any]) -> _Result:
        self._record(EventKind.API_CALL, method="logOut")
        return _Result(True)

    # ------------------------------------------------------------------ payloads

    def _message_payload(self, message: ChatMessage) -> JsonDict:
        """The message as a Bot API ``Message`` object."""
        chat = self._chats[message.chat_id]
        payload: JsonDict = {
            "message_id": message.message_id,
            "from": self.bot_user() if message.from_bot else chat.user.to_telegram(),
            "chat": chat.user.to_chat(),
            "date": _unix(message.date),
        }
        if message.document is not None:
            payload["document"] = message.document.to_telegram()
            if message.text:
                payload["caption"] = message.text
            if message.entities:
                payload["caption_entities"] = [dict(entity) for entity in message.entities]
        else:
            payload["text"] = message.text
        if message.entities and message.document is None:
            payload["entities"] = [dict(entity) for entity in message.entities]
        if message.edit_date is not None:
            payload["edit_date"] = _unix(message.edit_date)
        if message.reply_markup is not None:
            payload["reply_markup"] = message.reply_markup
        if message.reply_to_message_id is not None:
            replied = chat.messages.get(message.reply_to_message_id)
            if replied is not None:
                nested = self._message_payload(
                    dataclasses.replace(replied, reply_to_message_id=None)
                )
                payload["reply_to_message"] = nested
        return payload


def _require_utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise SandboxError("Telegram clients cannot send unpaired surrogate characters") from None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _source_html(params: Mapping[str, Any]) -> str:
    """The message as HTML: what the bot sent in HTML mode, else its text escaped."""
    text = str(params["text"])
    mode = params.get("parse_mode")
    if isinstance(mode, str) and mode.lower() == "html":
        return text
    return _escape(text)


def _read_markup(
    markup: JsonDict | None, *, inline_only: bool = False
) -> tuple[JsonDict | None, tuple[tuple[Button, ...], ...], JsonDict | None]:
    """Check reply_markup as Telegram does; returns (inline markup, buttons, other keyboard)."""
    if markup is None:
        return None, (), None
    if "inline_keyboard" not in markup:
        if inline_only:
            raise ApiError.bad_request("inline keyboard expected")
        return None, (), markup
    rows: list[list[JsonDict]] = [row for row in markup["inline_keyboard"] if row]
    # The Bot API server first needs each button to have a type ...
    for row in rows:
        for button in row:
            if not any(
                button.get(kind) not in (None, "")
                for kind in (
                    "url",
                    "callback_data",
                    "callback_game",
                    "pay",
                    "switch_inline_query",
                    "switch_inline_query_chosen_chat",
                    "switch_inline_query_current_chat",
                    "login_url",
                    "web_app",
                    "copy_text",
                )
            ):
                raise ApiError.bad_request(
                    "can't parse inline keyboard button: Text buttons are unallowed in the "
                    "inline keyboard"
                )
    # ... then Telegram checks labels and URLs ...
    for row in rows:
        for button in row:
            if not button["text"]:
                raise ApiError.bad_request("inline keyboard button text must be non-empty")
            url = button.get("url")
            if url:
                checked = check_link(url)
                if not isinstance(checked, str):
                    raise ApiError.bad_request(
                        f"inline keyboard button URL '{url}' is invalid: {checked.reason}"
                    )
    # ... and finally the sizes.
    for row in rows:
        for button in row:
            data = button.get("callback_data")
            if data and len(data.encode("utf-8")) > _MAX_CALLBACK_DATA_BYTES:
                raise ApiError.bad_request("BUTTON_DATA_INVALID")
    if sum(len(row) for row in rows) > _MAX_BUTTONS or any(
        len(row) > _MAX_BUTTONS_PER_ROW for row in rows
    ):
        raise ApiError.bad_request("reply markup is too long")
    buttons = tuple(
        tuple(
            Button(
                label=button["text"],
                callback_data=button.get("callback_data") or None,
                url=button.get("url") or None,
            )
            for button in row
        )
        for row in rows
    )
    if not rows:
        return None, (), None
    return {"inline_keyboard": rows}, buttons, None


async def _read_params(request: web.Request) -> dict[str, object]:
    """Parameters from the query string and a JSON, urlencoded or multipart body."""
    params: dict[str, object] = dict(request.query)
    if not request.body_exists:
        return params
    if request.content_type == "application/json":
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise ApiError.bad_request("can't parse JSON encoded request body") from None
        if not isinstance(body, dict):
            raise ApiError.bad_request("JSON request body must be an object")
        params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                params[key] = UploadedFile(value.filename, value.file.read(), value.content_type)
            elif isinstance(value, bytes):
                params[key] = value.decode("utf-8", "replace")
            else:
                params[key] = value
    return params


def _reply(body: JsonDict, status: int) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body, ensure_ascii=False), content_type="application/json"
    )
