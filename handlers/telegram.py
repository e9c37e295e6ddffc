"""The thin Telegram edge: a PTB ``Update`` becomes an ``Event``; the engine's replies become
Bot API calls. Nothing here decides anything about travel."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    Update,
)
from telegram import (
    Message as TgMessage,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.ext import Application, CallbackContext, ExtBot

from conversations.data import Conversation
from conversations.deps import FlowDeps
from conversations.engine import UNAVAILABLE, Engine, Event, Outgoing, TurnResult, User, render
from conversations.state import LockTimeoutError, StateUnavailableError
from services.messages import Message
from services.storage import Storage, StorageUnavailableError

log = logging.getLogger(__name__)

NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
TOO_SLOW = Message(text="That took too long on my side and was not saved. Please try again.")
TELEGRAM_TEXT_LIMIT = 4096


@dataclass(slots=True)
class BotDeps:
    """What the Telegram edge needs from the composition root."""

    engine: Engine[FlowDeps, Conversation]
    storage: Storage


DEPS_KEY = "travelbot"


class TravelContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[str, Any]]):
    """Typed context: handlers reach the engine as ``context.deps.engine``."""

    @property
    def deps(self) -> BotDeps:
        deps: BotDeps = self.bot_data[DEPS_KEY]
        return deps


@dataclass(slots=True)
class WebhookReply:
    """One Bot API call the webhook route sends back as its HTTP answer instead of making it.

    Telegram runs a method put in the answer to a webhook delivery, so answering a button press
    this way saves a request per press: the largest share of a worker's time goes to Bot API
    requests (benchmarks/throughput.py). The bot never learns the call's result, which an
    answer to a callback query does not need.
    """

    method: dict[str, Any] | None = None


# Set by the webhook route around each update; unset (polling, console) means call directly.
WEBHOOK_REPLY: ContextVar[WebhookReply | None] = ContextVar("webhook_reply", default=None)


async def answer_query(query: CallbackQuery, text: str | None, *, show_alert: bool) -> None:
    """Stop the button's spinner: in the webhook's answer when there is one, else by a call."""
    reply = WEBHOOK_REPLY.get()
    if reply is not None and reply.method is None:
        method: dict[str, Any] = {"method": "answerCallbackQuery", "callback_query_id": query.id}
        if text:
            method["text"] = text
        if show_alert:
            method["show_alert"] = True
        reply.method = method
        return
    try:
        await query.answer(text=text, show_alert=show_alert)
    except BadRequest as error:
        log.info("callback answer refused: %s", error)


def event_from_update(update: Update, bot_username: str | None) -> Event | None:
    """The traveller's action, or None for updates the bot ignores (channels, edits, joins)."""
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None or user.is_bot:
        return None
    who = User(
        id=user.id,
        first_name=user.first_name or "",
        username=user.username,
        language=user.language_code,
    )
    if update.callback_query is not None:
        return Event(
            kind="button",
            user=who,
            chat_id=chat.id,
            callback_data=update.callback_query.data or "",
        )
    message = update.message
    if message is None or message.text is None or chat.type != "private":
        return None
    return Event.typed(who, chat.id, message.text, bot_username=bot_username)


def keyboard_markup(reply: Outgoing) -> InlineKeyboardMarkup | None:
    if not reply.keyboard:
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(b.label, url=b.url)
                if b.url
                else InlineKeyboardButton(b.label, callback_data=b.callback_data)
                for b in row
            ]
            for row in reply.keyboard
        ]
    )


async def send_replies(
    bot: ExtBot[None],
    chat_id: int,
    replies: list[Outgoing],
    *,
    query: CallbackQuery | None = None,
) -> None:
    """Send or edit, in order. An edit that Telegram refuses falls back to a new message; a
    reply's document follows its text as a file."""
    for reply in replies:
        await _send_text(bot, chat_id, reply, query)
        if reply.document is not None:
            upload = InputFile(reply.document.content, filename=reply.document.filename)
            upload.mimetype = reply.document.mime_type  # PTB would guess it from the name
            caption = reply.document.caption or None
            parse_mode = ParseMode.HTML if caption else None
            await bot.send_document(chat_id, upload, caption=caption, parse_mode=parse_mode)


async def _send_text(
    bot: ExtBot[None], chat_id: int, reply: Outgoing, query: CallbackQuery | None
) -> None:
    markup = keyboard_markup(reply)
    target = query.message if query is not None else None
    if reply.edit and isinstance(target, TgMessage):
        try:
            await bot.edit_message_text(
                reply.text,
                chat_id=chat_id,
                message_id=target.message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=markup,
                link_preview_options=NO_PREVIEW,
            )
            return
        except BadRequest as error:
            if "not modified" in str(error).lower():
                return
            log.info("edit refused (%s); sending a new message instead", error)
    await bot.send_message(
        chat_id,
        reply.text,
        parse_mode=ParseMode.HTML,
        reply_markup=markup,
        link_preview_options=NO_PREVIEW if reply.disable_preview else None,
    )


async def on_update(update: Update, context: TravelContext) -> None:
    """Every update goes through here: one engine turn, then the replies."""
    deps = context.deps
    event = event_from_update(update, context.bot.username if context.bot else None)
    query = update.callback_query
    if event is None:
        if query is not None:
            await answer_query(query, None, show_alert=False)
        return
    result = TurnResult(replies=[])
    try:
        result = await deps.engine.handle(event)
    except (StateUnavailableError, StorageUnavailableError):
        log.warning("a backend is unavailable; told the user to retry", exc_info=True)
        result = TurnResult(replies=render([UNAVAILABLE], 0))
    except LockTimeoutError:
        result = TurnResult(replies=render([TOO_SLOW], 0))
    finally:
        if query is not None:
            # Every callback query is answered, whatever happened, so no spinner is left.
            notice = result.notice
            await answer_query(
                query,
                notice.text or None if notice else None,
                show_alert=bool(notice and notice.alert),
            )
    try:
        await send_replies(context.bot, event.chat_id, result.replies, query=query)
    except Forbidden:
        await deps.storage.set_bot_blocked(event.user.id, True)


class TelegramNotifier:
    """``services.notify.Notifier`` over the bot: messages outside a conversation turn.

    Global buttons (actions starting with "!") carry no conversation version, so the engine's
    renderer is reused with version 0.
    """

    def __init__(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        self._application = application

    async def notify(self, user_id: int, message: Message) -> bool:
        try:
            await send_replies(self._application.bot, user_id, render([message], 0))
        except Forbidden:
            return False
        except RetryAfter:
            raise
        except TelegramError:
            log.warning("could not notify a user", exc_info=True)
            raise
        return True


async def on_error(update: object, context: TravelContext) -> None:
    """The one place unexpected errors land: logged with the traceback, the user reassured."""
    log.error("unhandled error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_chat is not None:
        try:
            await context.bot.send_message(
                update.effective_chat.id,
                "Sorry, something went wrong on my side. Your data is safe: "
                "please try again, or /cancel to start over.",
            )
        except TelegramError:
            log.warning("could not tell the user about the error", exc_info=True)
