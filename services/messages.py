"""Outgoing messages as plain data: conversations and services describe, handlers render.

Text is Telegram HTML. Anything a user typed must pass through ``html.escape`` before it is
put into ``text``; ``services.messages.esc`` is the one helper for that.
"""

from __future__ import annotations

import html

from pydantic import BaseModel, ConfigDict, Field


def esc(value: object) -> str:
    """Escape user-supplied text for Telegram HTML."""
    return html.escape(str(value), quote=False)


class Button(BaseModel):
    """An inline button: either a callback ``action`` (with an optional short ``arg``) or a URL."""

    model_config = ConfigDict(frozen=True)

    label: str
    action: str | None = None  # e.g. "pick"; stable name, resolved by the flow
    arg: str = ""  # small payload, e.g. an index or a code; never a price
    url: str | None = None


class Document(BaseModel):
    """A file that goes with a message (a data export, a calendar file), sent right after the
    message's text as a document with its own short caption (Telegram HTML, up to 1024)."""

    model_config = ConfigDict(frozen=True)

    filename: str
    content: bytes = Field(repr=False)
    mime_type: str = "application/octet-stream"
    caption: str = Field(default="", max_length=1024)


class Message(BaseModel):
    """One bot message. ``edit`` asks to edit the message the user pressed a button on;
    ``document``, if any, follows the text as a file."""

    model_config = ConfigDict(frozen=True)

    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    edit: bool = False
    disable_preview: bool = True
    document: Document | None = None


class Notice(BaseModel):
    """A short toast shown when a callback query is answered."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(default="", max_length=200)
    alert: bool = False
