"""The conversation engine: per-chat lock, load, transition, save, unlock.

Flows declare their states as data (``State``: a text handler, button handlers by action, a hint);
a handler is a function of (deps, data, event[, pressed]) that returns a ``Step`` (new state, new
data, replies). The engine is generic over the deps and the conversation data, so mypy checks
each flow's handlers against the engine that runs them. A handler always gets loaded data, never
None: ``Router.load_data`` is told the state it loads for, so the data knows the chat's current
state (``Conversation.loaded_state``) for the commands and global buttons that run in any state.
Replies are ``services.messages.Message`` values: the engine turns each button into a compact
callback token that carries the conversation version, so a button from an older step is
recognised and refused without touching anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from conversations.state import (
    ChatKey,
    LockTimeoutError,
    RateLimit,
    StateRecord,
    StateStore,
    StateUnavailableError,
    Turn,
)
from services.messages import Button, Document, Message, Notice

log = logging.getLogger(__name__)

CALLBACK_LIMIT = 64  # bytes, Telegram's limit for callback_data
GLOBAL_PREFIX = "!"  # actions that work whatever the state (links in notifications)
KEEP = "\x00keep"  # a Step state meaning: answer, but leave the conversation where it is


@dataclass(frozen=True, slots=True)
class User:
    id: int
    first_name: str = ""
    username: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """What the traveller did, independent of Telegram's types."""

    kind: Literal["text", "command", "button"]
    user: User
    chat_id: int
    text: str = ""  # message text, or a command's argument string
    command: str | None = None  # "start", "cancel"...
    callback_data: str | None = None

    @classmethod
    def typed(
        cls, user: User, chat_id: int, text: str, *, bot_username: str | None = None
    ) -> Event:
        """A message the user typed: ``/name args`` is a command (lower-cased; one addressed
        ``/name@other_bot`` is an unknown command), anything else is text."""
        text = text.strip()
        if not text.startswith("/"):
            return cls(kind="text", user=user, chat_id=chat_id, text=text)
        head, _, rest = text.partition(" ")
        name, _, target = head[1:].partition("@")
        if target and bot_username and target.lower() != bot_username.lower():
            name = ""  # meant for another bot: answered as an unknown command
        return cls(
            kind="command", user=user, chat_id=chat_id, command=name.lower(), text=rest.strip()
        )


@dataclass(frozen=True, slots=True)
class Pressed:
    """A decoded button press."""

    action: str
    arg: str


@dataclass(slots=True)
class Step:
    """The result of a transition. ``state=None`` ends the flow (the record is cleared)."""

    state: str | None
    data: BaseModel | None
    replies: list[Message] = field(default_factory=list)
    notice: Notice | None = None
    # Drop the chat's conversation record whatever ``state`` says: lets a global button (the
    # /deletedata confirmation) erase what the conversation holds about the traveller.
    forget: bool = False
    # Let a global button move the chat to ``state`` with ``data`` (a notification's "See
    # flights" opens the results); other global buttons leave the traveller where they were.
    moves: bool = False


@dataclass(frozen=True, slots=True)
class RenderedButton:
    label: str
    callback_data: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A reply ready for the transport: buttons already carry their callback tokens."""

    text: str
    keyboard: tuple[tuple[RenderedButton, ...], ...]
    edit: bool
    disable_preview: bool = True
    document: Document | None = None  # sent after the text


@dataclass(slots=True)
class TurnResult:
    replies: list[Outgoing]
    notice: Notice | None = None
    state: str | None = None


DepsT = TypeVar("DepsT")  # what the flows need from the services (FlowDeps in production)
DataT = TypeVar("DataT", bound=BaseModel)  # what a chat's conversation remembers

TextHandler = Callable[[DepsT, DataT, Event], Awaitable[Step]]
ButtonHandler = Callable[[DepsT, DataT, Event, Pressed], Awaitable[Step | None]]
# Runs first in every turn, with the chat's record as read under the lock: a Step answers the
# update instead of the flows (a blocked user), None lets the turn go on as usual.
Gate = Callable[[DepsT, Turn, Event], Awaitable[Step | None]]


@dataclass(frozen=True, slots=True)
class State(Generic[DepsT, DataT]):
    """One state of a flow: how it answers text and buttons, and what to say otherwise."""

    name: str
    hint: str
    on_text: TextHandler[DepsT, DataT] | None = None
    buttons: Mapping[str, ButtonHandler[DepsT, DataT]] = field(default_factory=dict)


def encode_callback(version: int, action: str, arg: str = "") -> str:
    """``<version base36>|<action>|<arg>``; global actions drop the version."""
    if action.startswith(GLOBAL_PREFIX):
        token = f"{action}|{arg}"
    else:
        token = f"{_b36(version)}|{action}|{arg}"
    if len(token.encode()) > CALLBACK_LIMIT:
        raise ValueError(f"callback data over {CALLBACK_LIMIT} bytes: {token[:20]}...")
    return token


def decode_callback(data: str) -> tuple[int | None, Pressed] | None:
    """Parse a token; None when it is not one of ours (forged or from an old bot version)."""
    parts = data.split("|", 2)
    if parts[0].startswith(GLOBAL_PREFIX) and len(parts) == 2:
        return None, Pressed(action=parts[0], arg=parts[1])
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        version = int(parts[0], 36)
    except ValueError:
        return None
    return version, Pressed(action=parts[1], arg=parts[2])


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    if number == 0:
        return "0"
    out = []
    while number:
        number, rest = divmod(number, 36)
        out.append(digits[rest])
    return "".join(reversed(out))


def fresh_version() -> int:
    """Versions of a new conversation start from the clock, so a button kept from an earlier,
    cleared conversation cannot line up with the new one's counter."""
    return int(time.time() * 1000) % (36**7)


def render(messages: list[Message], version: int) -> list[Outgoing]:
    out = []
    for message in messages:
        keyboard = tuple(
            tuple(_render_button(button, version) for button in row)
            for row in message.buttons
            if row
        )
        out.append(
            Outgoing(
                text=message.text,
                keyboard=keyboard,
                edit=message.edit,
                disable_preview=message.disable_preview,
                document=message.document,
            )
        )
    return out


def _render_button(button: Button, version: int) -> RenderedButton:
    if button.url:
        return RenderedButton(label=button.label, url=button.url)
    return RenderedButton(
        label=button.label,
        callback_data=encode_callback(version, button.action or "noop", button.arg),
    )


# A person answering a bot rarely sends more than one message a second; a script or a stuck key
# does. Thirty in fifteen seconds leaves room for fast typists and buttons pressed in a row.
DEFAULT_RATE = RateLimit(limit=30, window=15)

UNAVAILABLE = Message(
    text="Sorry, I'm temporarily unavailable. Your data is safe: please try again in a minute."
)
BUSY = Message(text="Still working on your previous message: one moment, then try again.")
SLOW_DOWN = Message(text="You're sending messages very fast. I'll answer again in a few seconds.")
UNKNOWN_COMMAND = "I don't know that command. /help lists what I can do."
EXPIRED_BUTTON = Notice(text="This button has expired. Use the latest message, or /cancel.")


# A chat's lock: long enough for a slow provider search with its retries; a crashed worker's
# lock still frees itself within a minute.
LOCK_TTL = 60.0
# A save that failed is tried again after these pauses (doubling), while the lock is ours.
_FIRST_LATE_SAVE = 0.2
_MAX_LATE_SAVE = 2.0


class Router(Generic[DepsT, DataT]):
    """Maps what the user did to a flow handler; knows nothing about storage or Telegram.
    Built from the flows' declarations by ``conversations.flow.Registry``."""

    def __init__(
        self,
        *,
        states: Mapping[str, State[DepsT, DataT]],
        commands: Mapping[str, TextHandler[DepsT, DataT]],
        global_buttons: Mapping[str, ButtonHandler[DepsT, DataT]],
        load_data: Callable[[str | None, dict[str, Any]], DataT],
        idle: State[DepsT, DataT],
        gate: Gate[DepsT] | None = None,
    ) -> None:
        self.states = states
        self.commands = commands
        self.global_buttons = global_buttons
        self.load_data = load_data
        self.idle = idle
        self.gate = gate


class Engine(Generic[DepsT, DataT]):
    """Runs one turn of a chat's conversation under that chat's lock."""

    def __init__(
        self,
        store: StateStore,
        router: Router[DepsT, DataT],
        deps: DepsT,
        *,
        bot_id: int,
        ttl: int,
        rate: RateLimit | None = DEFAULT_RATE,
    ) -> None:
        self.store = store
        self.router = router
        self.deps = deps
        self.bot_id = bot_id
        self.ttl = ttl
        self.rate = rate
        self._late_saves: set[asyncio.Task[None]] = set()

    async def handle(self, event: Event) -> TurnResult:
        key = ChatKey(bot_id=self.bot_id, chat_id=event.chat_id)
        try:
            turn = await self.store.begin(
                key,
                rate_key=f"user:{event.user.id}",
                rate=self.rate,
                wait=8.0,
                lock_ttl=LOCK_TTL,
            )
        except StateUnavailableError:
            log.warning("state store unavailable for an update", exc_info=True)
            return TurnResult(replies=render([UNAVAILABLE], 0), notice=Notice(text="Unavailable"))
        except LockTimeoutError:
            return TurnResult(replies=render([BUSY], 0), notice=Notice(text="One moment…"))

        gated: Step | None = None
        if self.router.gate is not None:
            try:
                gated = await self.router.gate(self.deps, turn, event)
            except BaseException:
                await self._release(turn)
                raise

        if gated is None and not turn.rate.allowed:
            await self._release(turn)
            if turn.rate.first_refusal:
                return TurnResult(replies=render([SLOW_DOWN], 0), notice=Notice(text="Slow down"))
            return TurnResult(replies=[], notice=Notice())

        try:
            if gated is not None:
                step, changed = gated, _changes_record(turn.record, gated)
            else:
                step, changed = await self._transition(turn, event)
        except BaseException:
            await self._release(turn)
            raise

        record = turn.record
        if changed:
            version = record.version + 1 if record.version else fresh_version()
            new_record = StateRecord(
                state=step.state,
                data=step.data.model_dump(mode="json") if step.data is not None else {},
                version=version,
            )
            if new_record.state is None:
                new_record = StateRecord()
            await self._commit(turn, new_record)
            version_for_buttons = version
        else:
            await self._commit(turn, None)
            version_for_buttons = record.version
        return TurnResult(
            replies=render(step.replies, version_for_buttons),
            notice=step.notice,
            state=step.state,
        )

    async def _commit(self, turn: Turn, record: StateRecord | None) -> None:
        try:
            await self.store.commit(turn, record, ttl=self.ttl)
        except StateUnavailableError:
            # The turn's work is done (a booking and its payment link may exist by now), so
            # its replies still go out; the save is retried while the chat's lock is ours, so
            # the chat goes on from the new state, and is not locked, once the store is back.
            log.warning("state store unavailable while saving; retrying in the background")
            self._save_later(turn, record)
        except LockTimeoutError:
            # The turn outlived its lock and another update may have moved the chat on: our
            # write was refused so as not to overwrite it. The traveller simply tries again.
            log.warning("a turn outlived its chat lock; its state change was dropped")
            raise

    def _save_later(self, turn: Turn, record: StateRecord | None) -> None:
        task = asyncio.create_task(self._save_while_locked(turn, record), name="late-save")
        self._late_saves.add(task)
        task.add_done_callback(self._late_saves.discard)

    async def _save_while_locked(self, turn: Turn, record: StateRecord | None) -> None:
        deadline = time.monotonic() + LOCK_TTL
        delay = _FIRST_LATE_SAVE
        while True:
            await asyncio.sleep(delay)
            try:
                await self.store.commit(turn, record, ttl=self.ttl)
            except StateUnavailableError:
                if time.monotonic() >= deadline:
                    log.warning("a turn's state change was lost: the store stayed away")
                    return
                delay = min(delay * 2, _MAX_LATE_SAVE)
                continue
            except LockTimeoutError:
                # Our lock is gone: it ran out, or the first save did land and only its
                # answer was lost. Either way nothing more is ours to write.
                log.warning("a turn's late save found its lock gone; nothing was written")
                return
            log.info("a turn's state was saved once the store came back")
            return

    async def close(self) -> None:
        """Stop retrying saves: each chat's lock runs out by itself."""
        for task in list(self._late_saves):
            task.cancel()
        await asyncio.gather(*self._late_saves, return_exceptions=True)

    async def _release(self, turn: Turn) -> None:
        try:
            await self.store.release(turn)
        except StateUnavailableError:
            log.warning("could not release a chat lock; it expires by itself", exc_info=True)

    async def _transition(self, turn: Turn, event: Event) -> tuple[Step, bool]:
        """Run the handler. Returns the step and whether state or data changed."""
        record = turn.record
        state_name = record.state
        if state_name is not None and state_name not in self.router.states:
            state_name = None  # a state this version no longer has (or one no flow routes)
        try:
            data: DataT | None = self.router.load_data(state_name, record.data)
        except ValidationError:
            # Stored data from an older shape: start over rather than crash the chat.
            log.warning("discarding unreadable conversation data in state %s", state_name)
            state_name, data = None, None
        if data is None or state_name != record.state:
            # Handlers always get data; a record that is not used starts from nothing, and
            # counts as nothing when the engine decides whether the turn changed anything.
            fresh = self.router.load_data(None, {})
            state = self.router.idle
            step = await self._dispatch(state, fresh, event, record.version)
            return self._result(step, None, None)
        state = self.router.states.get(state_name or "", self.router.idle)
        step = await self._dispatch(state, data, event, record.version)
        return self._result(step, state_name, data)

    @staticmethod
    def _result(
        step: Step | None, state_name: str | None, data: BaseModel | None
    ) -> tuple[Step, bool]:
        if step is None:
            return Step(state=state_name, data=data), False
        if step.state == KEEP:
            step.state, step.data = state_name, data
        unchanged = step.state == state_name and _same(step.data, data)
        return step, not unchanged

    async def _dispatch(
        self, state: State[DepsT, DataT], data: DataT, event: Event, current_version: int
    ) -> Step | None:
        deps = self.deps
        if event.kind == "command":
            handler = self.router.commands.get(event.command or "")
            if handler is None:
                return _keep(state, data, UNKNOWN_COMMAND)
            return await handler(deps, data, event)

        if event.kind == "button":
            decoded = decode_callback(event.callback_data or "")
            if decoded is None:
                return _notice_only(state, data, EXPIRED_BUTTON)
            version, pressed = decoded
            if version is None:
                global_handler = self.router.global_buttons.get(pressed.action)
                if global_handler is None:
                    return _notice_only(state, data, EXPIRED_BUTTON)
                # Global buttons (from notifications, booking lists) never move the flow: the
                # traveller stays where they were, whatever the handler returns, unless it
                # asks for the conversation to be forgotten or to move on (``Step.moves``).
                step = await global_handler(deps, data, event, pressed)
                if step is None:
                    return None
                if step.forget:
                    return Step(state=None, data=None, replies=step.replies, notice=step.notice)
                if step.moves:
                    return step
                return Step(
                    state=state.name or None, data=data, replies=step.replies, notice=step.notice
                )
            if version != current_version or pressed.action not in state.buttons:
                return _notice_only(state, data, EXPIRED_BUTTON)
            return await state.buttons[pressed.action](deps, data, event, pressed)

        if state.on_text is None:
            return _keep(state, data, state.hint)
        return await state.on_text(deps, data, event)


def _keep(state: State[Any, Any], data: BaseModel, text: str) -> Step:
    return Step(state=state.name or None, data=data, replies=[Message(text=text)])


def _notice_only(state: State[Any, Any], data: BaseModel, notice: Notice) -> Step:
    return Step(state=state.name or None, data=data, notice=notice)


def _changes_record(record: StateRecord, step: Step) -> bool:
    data = step.data.model_dump(mode="json") if step.data is not None else {}
    return step.state != record.state or data != record.data


def _same(a: BaseModel | None, b: BaseModel | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.model_dump(mode="json") == b.model_dump(mode="json")
