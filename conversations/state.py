"""The conversation state store port.

One record per chat: the current flow state (a stable string name such as "search:date"), the
flow's data as JSON, and a version number that callback buttons carry. Each update costs two round
trips: ``begin`` takes the per-chat lock, reads the record and counts the user's rate limit in one
go; ``commit`` writes the record (or deletes it when empty), renews its TTL and releases the lock.
The lock is taken *before* the record is read, and expires on its own so a crashed worker never
wedges a chat.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StateUnavailableError(RuntimeError):
    """The state backend (Redis) did not answer: the user is told 'temporarily unavailable'."""


class LockTimeoutError(RuntimeError):
    """Another worker held the chat's lock for longer than we were willing to wait."""


@dataclass(frozen=True, slots=True)
class ChatKey:
    """Whose conversation: one record per (bot, chat). The one place the key format lives."""

    bot_id: int
    chat_id: int

    def state_key(self, prefix: str) -> str:
        return f"{prefix}:state:{self.bot_id}:{self.chat_id}"

    def lock_key(self, prefix: str) -> str:
        return f"{prefix}:lock:{self.bot_id}:{self.chat_id}"


class StateRecord(BaseModel):
    """What is stored for a chat. An empty record (no state, no data) is deleted, not stored."""

    model_config = ConfigDict(frozen=True)

    state: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    version: int = 0

    @property
    def is_empty(self) -> bool:
        return self.state is None and not self.data


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` updates per ``window`` seconds for one user."""

    limit: int
    window: int


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    first_refusal: bool  # True exactly once per window: the one polite "slow down" reply


ALLOW = RateDecision(allowed=True, first_refusal=False)


@dataclass(frozen=True, slots=True)
class Turn:
    """A chat's record as read under its lock, plus the lock's token for ``commit``."""

    key: ChatKey
    record: StateRecord
    token: str
    rate: RateDecision


class StateStore(ABC):
    """Adapters: ``MemoryStateStore`` (embedded default) and ``RedisStateStore``."""

    name: str

    @abstractmethod
    async def begin(
        self,
        key: ChatKey,
        *,
        rate_key: str | None = None,
        rate: RateLimit | None = None,
        wait: float = 10.0,
        lock_ttl: float = 30.0,
    ) -> Turn:
        """Take the chat's lock (waiting up to ``wait`` seconds), then read its record and count
        one hit against ``rate_key`` if given. One round trip when the lock is free.

        Raises ``LockTimeoutError`` or ``StateUnavailableError``.
        """

    @abstractmethod
    async def commit(self, turn: Turn, record: StateRecord | None, *, ttl: int) -> None:
        """Store ``record`` with ``ttl`` seconds to live (``None`` keeps the stored one and only
        renews its TTL; an empty record deletes the key), then release the lock if still ours.
        One round trip."""

    @abstractmethod
    async def release(self, turn: Turn) -> None:
        """Release the lock without writing (after an error)."""

    @abstractmethod
    async def peek(self, key: ChatKey) -> StateRecord:
        """Read without locking (admin views, tests)."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StateUnavailableError`` unless the backend answers."""

    @abstractmethod
    async def close(self) -> None: ...
