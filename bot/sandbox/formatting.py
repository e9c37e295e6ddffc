"""Telegram's text rules, reimplemented: HTML parse mode, trimming, entities, URL checks.

The behaviour follows what the Bot API server does (tdlib), because the point of the sandbox is
to reject exactly what Telegram rejects: an unknown tag fails, an unknown attribute is ignored,
only ``&lt; &gt; &amp; &quot;`` and numeric references are decoded (any other ``&`` stays
literal), and error positions are UTF-8 byte offsets into the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.sandbox.errors import ApiError

JsonDict = dict[str, Any]

MAX_MESSAGE_LENGTH = 4096

_SUPPORTED_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "tg-time",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_SIMPLE_ENTITY = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "u": "underline",
    "ins": "underline",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}
_NAMED_REFERENCES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_SPACE = frozenset(" \t\n\r\f\v")
_TG_USER_LINK = re.compile(r"^tg://user\?id=(\d{1,19})$", re.IGNORECASE)
_BOT_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{1,64})?(?![^\s])")
_URL_HOST_CHARS = re.compile(r"^[A-Za-z0-9._~%!$&'()*+,;=-]+$")
_TG_HOST = re.compile(r"^[A-Za-z0-9_-]+$")


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, the unit Telegram uses for entity offsets."""
    return sum(2 if ord(char) > 0xFFFF else 1 for char in text)


def _byte_offset(source: str, index: int) -> int:
    return len(source[:index].encode("utf-8", "surrogatepass"))


@dataclass
class _OpenTag:
    name: str
    argument: str
    unix_time: int
    utf16_offset: int
    text_index: int


class _HtmlParser:
    """One pass over the source, building plain text and entities the way tdlib does."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.out: list[str] = []
        self.utf16 = 0
        self.entities: list[JsonDict] = []
        self.stack: list[_OpenTag] = []

    def fail(self, detail: str) -> ApiError:
        return ApiError.bad_request(f"can't parse entities: {detail}")

    def at(self, index: int) -> str:
        return self.source[index] if index < len(self.source) else ""

    def decode_reference(self, index: int) -> tuple[str, int] | None:
        """Decode an ``&...`` reference at ``index``; None when it is a literal ampersand."""
        source = self.source
        end = index + 1
        if self.at(end) == "#":
            end += 1
            hexadecimal = self.at(end) == "x"
            if hexadecimal:
                end += 1
            digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
            start = end
            while self.at(end) and self.at(end) in digits:
                end += 1
            if end - index >= 10 or end == start:
                return None
            code = int(source[start:end], 16 if hexadecimal else 10)
            if code == 0 or code >= 0x10FFFF:
                return None
            if 0xD800 <= code <= 0xDFFF:
                raise self.fail(
                    "Text contains invalid Unicode characters after decoding HTML entities, "
                    "check for unmatched surrogate code units"
                )
            char = chr(code)
        else:
            while self.at(end).isascii() and self.at(end).isalpha():
                end += 1
            named = _NAMED_REFERENCES.get(source[index + 1 : end])
            if named is None:
                return None
            char = named
        if self.at(end) == ";":
            end += 1
        return char, end

    def emit(self, char: str) -> None:
        self.out.append(char)
        self.utf16 += 2 if ord(char) > 0xFFFF else 1

    def parse(self) -> tuple[str, list[JsonDict]]:
        index = 0
        source = self.source
        while index < len(source):
            char = source[index]
            if char == "&":
                decoded = self.decode_reference(index)
                if decoded is not None:
                    self.emit(decoded[0])
                    index = decoded[1]
                    continue
            if char != "<":
                self.emit(char)
                index += 1
                continue
            closing = self.at(index + 1) == "/"
            index = self.end_tag(index) if closing else self.start_tag(index)
        if self.stack:
            raise self.fail(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"'
            )
        self.entities.sort(key=lambda entity: (entity["offset"], -entity["length"]))
        return "".join(self.out), self.entities

    def start_tag(self, begin: int) -> int:
        source = self.source
        offset = _byte_offset(source, begin)
        index = begin + 1
        while index < len(source) and source[index] not in _SPACE and source[index] != ">":
            index += 1
        if index >= len(source):
            raise self.fail(f"Unclosed start tag at byte offset {offset}")
        tag = source[begin + 1 : index].lower()
        if tag not in _SUPPORTED_TAGS:
            raise self.fail(f'Unsupported start tag "{tag}" at byte offset {offset}')
        argument = ""
        unix_time = 0
        while self.at(index) != ">":
            while self.at(index) in _SPACE and self.at(index):
                index += 1
            if self.at(index) == ">":
                break
            if not self.at(index):
                raise self.fail(f'Unclosed start tag "{tag}" at byte offset {offset}')
            name_start = index
            while (
                self.at(index) and self.at(index) not in _SPACE and self.at(index) not in "=>/\"'"
            ):
                index += 1
            attribute = source[name_start:index]
            if not attribute:
                raise self.fail(f'Empty attribute name in the tag "{tag}" at byte offset {offset}')
            while self.at(index) in _SPACE and self.at(index):
                index += 1
            if self.at(index) != "=":
                if not self.at(index):
                    raise self.fail(f'Unclosed start tag "{tag}" at byte offset {offset}')
                if tag == "blockquote" and attribute == "expandable":
                    argument = "1"
                continue
            index += 1
            while self.at(index) in _SPACE and self.at(index):
                index += 1
            if not self.at(index):
                raise self.fail(f'Unclosed start tag "{tag}" at byte offset {offset}')
            value, index = self.attribute_value(index)
            if not self.at(index):
                raise self.fail(f"Unclosed start tag at byte offset {offset}")
            argument, unix_time = _apply_attribute(tag, attribute, value, argument, unix_time)
        if tag == "span" and argument != "spoiler":
            raise self.fail(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
        self.stack.append(_OpenTag(tag, argument, unix_time, self.utf16, len(self.out)))
        return index + 1

    def attribute_value(self, index: int) -> tuple[str, int]:
        source = self.source
        quote = self.at(index)
        if quote not in ("'", '"'):
            start = index
            while self.at(index) and (self.at(index).isalnum() or self.at(index) in ".-"):
                index += 1
            if self.at(index) and self.at(index) not in _SPACE and self.at(index) != ">":
                raise self.fail(
                    f"Unexpected end of name token at byte offset {_byte_offset(source, start)}"
                )
            return source[start:index].lower(), index
        index += 1
        chars: list[str] = []
        while self.at(index) and self.at(index) != quote:
            if self.at(index) == "&":
                decoded = self.decode_reference(index)
                if decoded is not None:
                    chars.append(decoded[0])
                    index = decoded[1]
                    continue
            chars.append(self.at(index))
            index += 1
        if self.at(index) == quote:
            index += 1
        return "".join(chars), index

    def end_tag(self, begin: int) -> int:
        source = self.source
        offset = _byte_offset(source, begin)
        if not self.stack:
            raise self.fail(f"Unexpected end tag at byte offset {offset}")
        index = begin + 2
        while self.at(index) and self.at(index) not in _SPACE and self.at(index) != ">":
            index += 1
        name = source[begin + 2 : index].lower()
        while self.at(index) and self.at(index) in _SPACE:
            index += 1
        if self.at(index) != ">":
            raise self.fail(f"Unclosed end tag at byte offset {offset}")
        top = self.stack[-1]
        if name and name != top.name:
            raise self.fail(
                f'Unmatched end tag at byte offset {offset}, expected "</{top.name}>", '
                f'found "</{name}>"'
            )
        if self.utf16 > top.utf16_offset:
            self.close_entity(top)
        self.stack.pop()
        return index + 1

    def close_entity(self, top: _OpenTag) -> None:
        offset = top.utf16_offset
        length = self.utf16 - offset
        entity: JsonDict = {"offset": offset, "length": length}
        last = self.entities[-1] if self.entities else None
        same_span = last is not None and last["offset"] == offset and last["length"] == length
        if top.name in _SIMPLE_ENTITY:
            entity["type"] = _SIMPLE_ENTITY[top.name]
        elif top.name == "a":
            url = top.argument or "".join(self.out[top.text_index :])
            user = _TG_USER_LINK.match(url)
            if user:
                entity["type"] = "text_mention"
                entity["user"] = {"id": int(user.group(1)), "is_bot": False, "first_name": ""}
            else:
                checked = check_link(url)
                if isinstance(checked, LinkError):
                    return  # Telegram silently drops a link it cannot use
                entity["type"] = "text_link"
                entity["url"] = checked
        elif top.name == "tg-emoji":
            if not top.argument.isdigit() or int(top.argument) == 0:
                raise self.fail("Invalid custom emoji identifier specified")
            entity["type"] = "custom_emoji"
            entity["custom_emoji_id"] = top.argument
        elif top.name == "tg-time":
            if top.unix_time <= 0:
                return
            entity["type"] = "date_time"
            entity["unix_time"] = top.unix_time
        elif top.name == "pre":
            if same_span and last is not None and last["type"] == "code" and last.get("language"):
                last["type"] = "pre"
                return
            entity["type"] = "pre"
        elif top.name == "code":
            if same_span and last is not None and last["type"] == "pre" and top.argument:
                last["language"] = top.argument
                return
            entity["type"] = "code"
            if top.argument:
                entity["language"] = top.argument  # dropped below unless a <pre> wraps it
        else:  # blockquote
            entity["type"] = "expandable_blockquote" if top.argument else "blockquote"
        self.entities.append(entity)


def _apply_attribute(
    tag: str, attribute: str, value: str, argument: str, unix_time: int
) -> tuple[str, int]:
    if tag == "a" and attribute == "href":
        return value, unix_time
    if tag == "code" and attribute == "class" and value.startswith("language-"):
        return value[len("language-") :], unix_time
    if tag == "span" and attribute == "class" and value.startswith("tg-"):
        return value[len("tg-") :], unix_time
    if tag == "tg-emoji" and attribute == "emoji-id":
        return value, unix_time
    if tag == "blockquote" and attribute == "expandable":
        return "1", unix_time
    if tag == "tg-time" and attribute == "unix":
        return argument, int(value) if value.lstrip("-").isdigit() else 0
    if tag == "tg-time" and attribute == "format":
        return value, unix_time
    return argument, unix_time  # unknown attributes are ignored, as Telegram does


def parse_html(source: str) -> tuple[str, list[JsonDict]]:
    """Plain text and entities of an HTML-formatted message, or ApiError as Telegram words it."""
    text, entities = _HtmlParser(source).parse()
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    return text, entities


def trim_text(text: str, entities: list[JsonDict]) -> tuple[str, list[JsonDict]]:
    """Strip surrounding whitespace the way Telegram does, moving entities along."""
    stripped_left = len(text) - len(text.lstrip())
    shift = utf16_length(text[:stripped_left])
    trimmed = text.strip()
    total = utf16_length(trimmed)
    kept: list[JsonDict] = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, total)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return trimmed, kept


def message_text(
    text: str, parse_mode: str | None, entities: list[JsonDict] | None
) -> tuple[str, list[JsonDict]]:
    """Text and entities as Telegram stores them, enforcing 1..4096 characters after parsing."""
    if not text:
        raise ApiError.bad_request("message text is empty")
    if parse_mode:
        mode = parse_mode.lower()
        if mode == "html":
            plain, parsed = parse_html(text)
        elif mode in ("markdown", "markdownv2"):
            raise ApiError.bad_request(
                f"parse_mode {parse_mode} is not supported by the sandbox; use HTML"
            )
        else:
            raise ApiError.bad_request(f"unsupported parse_mode {parse_mode}")
    else:
        plain, parsed = text, _checked_entities(text, entities or [])
    plain, parsed = trim_text(plain, parsed)
    if not plain:
        raise ApiError.bad_request("text must be non-empty")
    if len(plain) > MAX_MESSAGE_LENGTH:
        raise ApiError.bad_request("message is too long")
    return plain, parsed


_ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    }
)


def _checked_entities(text: str, entities: list[JsonDict]) -> list[JsonDict]:
    total = utf16_length(text)
    checked: list[JsonDict] = []
    for entity in entities:
        kind = entity.get("type")
        if kind not in _ENTITY_TYPES:
            raise ApiError.bad_request(f"can't parse MessageEntity: Unknown entity type {kind}")
        offset, length = entity["offset"], entity["length"]
        if offset < 0 or length <= 0 or offset + length > total:
            raise ApiError.bad_request(
                f"can't parse entities: Entity beginning at UTF-16 offset {offset} "
                f"ends after the end of the text at UTF-16 offset {total}"
            )
        checked.append(dict(entity))
    checked.sort(key=lambda entity: (entity["offset"], -entity["length"]))
    return checked


def command_entities(text: str) -> list[JsonDict]:
    """The bot_command entities Telegram marks in a user's message (offsets in UTF-16)."""
    found: list[JsonDict] = []
    for match in _BOT_COMMAND.finditer(text):
        command = match.group(0)
        if len(command.split("@", 1)[0]) > 33:
            continue
        found.append(
            {
                "type": "bot_command",
                "offset": utf16_length(text[: match.start()]),
                "length": utf16_length(command),
            }
        )
    return found


@dataclass(frozen=True)
class LinkError:
    """Why Telegram refuses a URL (its own wording)."""

    reason: str


def check_link(link: str) -> str | LinkError:
    """The URL as Telegram would store it, or why it is refused (http(s) with a dotted host, tg)."""
    lowered = link.lower()
    if lowered.startswith("tg:"):
        rest = link[3:].removeprefix("//")
        host = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if not host or not _TG_HOST.match(host) or lowered.startswith(("tg://http", "tg:http")):
            return LinkError("Wrong tg URL")
        return "tg://" + rest
    scheme, separator, rest = link.partition("://")
    if not separator:
        scheme, rest = "http", link
        if ":" in link.split("/", 1)[0] and not re.match(r"^[^:/]+:\d+", link):
            return LinkError("Unsupported URL protocol")
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        return LinkError("Unsupported URL protocol")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    host_port = authority.rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        return LinkError("Wrong port number specified in the URL")
    if not host:
        return LinkError("URL host is empty")
    if not _URL_HOST_CHARS.match(host):
        return LinkError("Host is invalid")
    if "." not in host:
        return LinkError("Wrong HTTP URL")
    return f"{scheme}://{rest}" if separator else f"http://{rest}"
