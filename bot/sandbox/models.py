"""What the sandbox shows of a chat: users, messages with their buttons, callback queries, events.

Every record is immutable and converts to and from plain JSON, so the same objects come back
from the in-process API and from the HTTP control endpoints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JsonDict = dict[str, Any]


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _required_time(value: Any) -> datetime:
    parsed = _parse_time(value)
    return parsed if parsed is not None else datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True)
class SandboxUser:
    """A Telegram user who can talk to the bot; their private chat has the same id."""

    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = "en"

    def to_telegram(self) -> JsonDict:
        """The user as a Bot API ``User`` object."""
        user: JsonDict = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        if self.language_code:
            user["language_code"] = self.language_code
        return user

    def to_chat(self) -> JsonDict:
        """The user's private chat as a Bot API ``Chat`` object."""
        chat: JsonDict = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.last_name:
            chat["last_name"] = self.last_name
        if self.username:
            chat["username"] = self.username
        return chat

    def to_json(self) -> JsonDict:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "username": self.username,
            "last_name": self.last_name,
            "language_code": self.language_code,
        }

    @classmethod
    def from_json(cls, data: JsonDict) -> SandboxUser:
        return cls(
            id=int(data["id"]),
            first_name=str(data["first_name"]),
            username=data.get("username"),
            last_name=data.get("last_name"),
            language_code=data.get("language_code"),
        )


@dataclass(frozen=True)
class Button:
    """An inline keyboard button: a label and what pressing it does."""

    label: str
    callback_data: str | None = None
    url: str | None = None

    @property
    def value(self) -> str | None:
        """The callback data, or the URL for a link button."""
        return self.callback_data if self.callback_data is not None else self.url

    def to_json(self) -> JsonDict:
        return {"label": self.label, "callback_data": self.callback_data, "url": self.url}

    @classmethod
    def from_json(cls, data: JsonDict) -> Button:
        return cls(
            label=str(data["label"]), callback_data=data.get("callback_data"), url=data.get("url")
        )


@dataclass(frozen=True)
class SentDocument:
    """A file the bot sent with sendDocument, kept whole so tests can read it."""

    file_id: str
    file_name: str | None
    mime_type: str | None
    content: bytes

    def to_json(self) -> JsonDict:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_id[-16:],
            "file_name": self.file_name,
            "mime_type": self.mime_type,
            "file_size": len(self.content),
        }


@dataclass(frozen=True)
class ChatMessage:
    """One message in a private chat, as it stands now (edits replace the earlier snapshot).

    ``seq`` is the log entry that created it and ``changed_seq`` the last one that changed it.
    ``reply_markup`` is the inline keyboard as the bot sent it; ``reply_keyboard`` a custom
    (non-inline) keyboard, if the bot sent one.
    """

    chat_id: int
    message_id: int
    from_bot: bool
    text: str
    html: str
    date: datetime
    seq: int
    entities: tuple[JsonDict, ...] = ()
    buttons: tuple[tuple[Button, ...], ...] = ()
    edit_count: int = 0
    edit_date: datetime | None = None
    deleted: bool = False
    reply_to_message_id: int | None = None
    reply_keyboard: JsonDict | None = None
    reply_markup: JsonDict | None = None
    changed_seq: int = 0
    document: SentDocument | None = None  # set for sendDocument; ``text`` is then the caption

    @property
    def button_rows(self) -> list[list[tuple[str, str | None]]]:
        """Rows of ``(label, callback data or URL)``."""
        return [[(button.label, button.value) for button in row] for row in self.buttons]

    @property
    def flat_buttons(self) -> list[Button]:
        """All buttons in reading order, the order the console numbers them in."""
        return [button for row in self.buttons for button in row]

    def button(self, label: str) -> Button:
        """The button with this label; KeyError names the labels there are."""
        for button in self.flat_buttons:
            if button.label == label:
                return button
        labels = [button.label for button in self.flat_buttons]
        raise KeyError(f"no button {label!r} on message {self.message_id}; buttons: {labels}")

    def to_json(self) -> JsonDict:
        return {
            "chat_id": self.chat_id,
            "message_id": self.message_id,
            "from_bot": self.from_bot,
            "text": self.text,
            "html": self.html,
            "date": _time(self.date),
            "seq": self.seq,
            "entities": list(self.entities),
            "buttons": [[button.to_json() for button in row] for row in self.buttons],
            "edit_count": self.edit_count,
            "edit_date": _time(self.edit_date),
            "deleted": self.deleted,
            "reply_to_message_id": self.reply_to_message_id,
            "reply_keyboard": self.reply_keyboard,
            "reply_markup": self.reply_markup,
            "changed_seq": self.changed_seq,
        }

    @classmethod
    def from_json(cls, data: JsonDict) -> ChatMessage:
        return cls(
            chat_id=int(data["chat_id"]),
            message_id=int(data["message_id"]),
            from_bot=bool(data["from_bot"]),
            text=str(data["text"]),
            html=str(data["html"]),
            date=_required_time(data.get("date")),
            seq=int(data["seq"]),
            entities=tuple(data.get("entities") or ()),
            buttons=tuple(
                tuple(Button.from_json(button) for button in row)
                for row in data.get("buttons") or ()
            ),
            edit_count=int(data.get("edit_count", 0)),
            edit_date=_parse_time(data.get("edit_date")),
            deleted=bool(data.get("deleted", False)),
            reply_to_message_id=data.get("reply_to_message_id"),
            reply_keyboard=data.get("reply_keyboard"),
            reply_markup=data.get("reply_markup"),
            changed_seq=int(data.get("changed_seq", 0)),
        )


@dataclass(frozen=True)
class CallbackQueryRecord:
    """A button press and whether the bot answered it (an unanswered one leaves a spinner)."""

    id: str
    user_id: int
    chat_id: int
    message_id: int
    data: str
    created_at: datetime
    answered: bool = False
    answered_at: datetime | None = None
    answer_text: str | None = None
    show_alert: bool = False

    def to_json(self) -> JsonDict:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "chat_id": self.chat_id,
            "message_id": self.message_id,
            "data": self.data,
            "created_at": _time(self.created_at),
            "answered": self.answered,
            "answered_at": _time(self.answered_at),
            "answer_text": self.answer_text,
            "show_alert": self.show_alert,
        }

    @classmethod
    def from_json(cls, data: JsonDict) -> CallbackQueryRecord:
        return cls(
            id=str(data["id"]),
            user_id=int(data["user_id"]),
            chat_id=int(data["chat_id"]),
            message_id=int(data["message_id"]),
            data=str(data["data"]),
            created_at=_required_time(data.get("created_at")),
            answered=bool(data.get("answered", False)),
            answered_at=_parse_time(data.get("answered_at")),
            answer_text=data.get("answer_text"),
            show_alert=bool(data.get("show_alert", False)),
        )


class EventKind(enum.StrEnum):
    """What happened, in the order the sandbox saw it."""

    USER_MESSAGE = "user_message"
    USER_CALLBACK = "user_callback"
    USER_BLOCKED = "user_blocked"
    USER_UNBLOCKED = "user_unblocked"
    UPDATE_DELIVERED = "update_delivered"
    DELIVERY_FAILED = "delivery_failed"
    BOT_MESSAGE = "bot_message"
    BOT_EDIT = "bot_edit"
    BOT_DELETE = "bot_delete"
    CALLBACK_ANSWERED = "callback_answered"
    CHAT_ACTION = "chat_action"
    API_CALL = "api_call"
    API_ERROR = "api_error"


@dataclass(frozen=True)
class SandboxEvent:
    """One entry of the ordered log; ``seq`` grows by one per entry."""

    seq: int
    kind: EventKind
    at: datetime
    chat_id: int | None = None
    message_id: int | None = None
    method: str | None = None
    update_id: int | None = None
    error: str | None = None
    message: ChatMessage | None = None
    detail: JsonDict = field(default_factory=dict)

    def to_json(self) -> JsonDict:
        return {
            "seq": self.seq,
            "kind": self.kind.value,
            "at": _time(self.at),
            "chat_id": self.chat_id,
            "message_id": self.message_id,
            "method": self.method,
            "update_id": self.update_id,
            "error": self.error,
            "message": self.message.to_json() if self.message is not None else None,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: JsonDict) -> SandboxEvent:
        message = data.get("message")
        return cls(
            seq=int(data["seq"]),
            kind=EventKind(data["kind"]),
            at=_required_time(data.get("at")),
            chat_id=data.get("chat_id"),
            message_id=data.get("message_id"),
            method=data.get("method"),
            update_id=data.get("update_id"),
            error=data.get("error"),
            message=ChatMessage.from_json(message) if message else None,
            detail=dict(data.get("detail") or {}),
        )


@dataclass(frozen=True)
class UserAction:
    """What one user action produced: the updates (a long text becomes several) and its log seq.

    Pass ``seq`` as ``since`` to the waiting helpers to see only what the bot did afterwards.
    """

    seq: int
    chat_id: int
    updates: tuple[JsonDict, ...]

    @property
    def update(self) -> JsonDict:
        return self.updates[0]

    @property
    def update_id(self) -> int:
        return int(self.updates[-1]["update_id"])

    @property
    def message_id(self) -> int | None:
        """The user's new message, or the bot message whose button was pressed."""
        last = self.updates[-1]
        if "message" in last:
            return int(last["message"]["message_id"])
        if "callback_query" in last:
            return int(last["callback_query"]["message"]["message_id"])
        return None

    def to_json(self) -> JsonDict:
        return {"seq": self.seq, "chat_id": self.chat_id, "updates": list(self.updates)}

    @classmethod
    def from_json(cls, data: JsonDict) -> UserAction:
        return cls(
            seq=int(data["seq"]), chat_id=int(data["chat_id"]), updates=tuple(data["updates"])
        )
