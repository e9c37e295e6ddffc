"""The in-process state store: the embedded default when ``REDIS_URL`` is not set.

It keeps the same semantics as the Redis adapter (records stored as JSON, per-chat lock with a
token and an expiry, fixed-window rate limits) so the contract suite holds for both. It serves
one process only: two workers each with a memory store do not share chats.

Memory stays flat however many chats pass through: a lock exists only while it is held, and
expired records and rate windows are dropped lazily on access and by a sweep that runs at most
once per ``sweep_interval`` seconds, piggybacked on ordinary calls (no background task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import ValidationError

from conversations.state import (
    ALLOW,
    ChatKey,
    LockTimeoutError,
    RateDecision,
    RateLimit,
    StateRecord,
    StateStore,
    Turn,
)

log = logging.getLogger("conversations.state")

EMPTY = StateRecord()


def encode_record(record: StateRecord) -> str:
    """The stored form of a record, shared by both adapters so they hold the same bytes."""
    return record.model_dump_json()


def decode_record(raw: str | bytes | None, key: ChatKey) -> StateRecord:
    """Read a stored record; a corrupt one counts as empty so the chat starts over, not crashes."""
    if raw is None:
        return EMPTY
    try:
        return StateRecord.model_validate_json(raw)
    except ValidationError as exc:
        # The content may hold traveller details: log where and why, never what.
        log.warning(
            "discarding unreadable state record for bot %s chat %s (%d errors: %s)",
            key.bot_id,
            key.chat_id,
            exc.error_count(),
            ", ".join(sorted({str(e["type"]) for e in exc.errors()})),
        )
        return EMPTY


def rate_decision(hits: int, limit: int) -> RateDecision:
    """Turn the hit count of the current window into a decision (fixed window)."""
    if hits <= limit:
        return ALLOW
    return RateDecision(allowed=False, first_refusal=hits == limit + 1)


def new_token() -> str:
    return secrets.token_hex(16)


@dataclass(slots=True)
class _HeldLock:
    token: str
    expires_at: float
    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Stored:
    raw: str
    expires_at: float


@dataclass(slots=True)
class _Window:
    hits: int
    expires_at: float


_Entry = TypeVar("_Entry", _Stored, _Window)
_Key = TypeVar("_Key")


class MemoryStateStore(StateStore):
    """Conversation state in this process's memory."""

    name = "memory"

    def __init__(
        self, *, sweep_interval: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``clock``: seconds on a monotonic scale; tests pass their own to expire entries."""
        self._clock = clock
        self._records: dict[ChatKey, _Stored] = {}
        self._locks: dict[ChatKey, _HeldLock] = {}
        self._windows: dict[str, _Window] = {}
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval
        # No backend to talk to; kept so callers (the benchmark) can read it on any store.
        self.round_trips = 0

    def __len__(self) -> int:
        """How many entries are held (records, locks, rate windows): what a leak would grow."""
        return len(self._records) + len(self._locks) + len(self._windows)

    async def begin(
        self,
        key: ChatKey,
        *,
        rate_key: str | None = None,
        rate: RateLimit | None = None,
        wait: float = 10.0,
        lock_ttl: float = 30.0,
    ) -> Turn:
        now = self._clock()
        deadline = now + wait
        self._maybe_sweep(now)
        while True:
            held = self._locks.get(key)
            if held is None or held.expires_at <= now:
                if held is not None:
                    # The holder died or overran: wake anyone else waiting on it too.
                    held.released.set()
                token = new_token()
                self._locks[key] = _HeldLock(token, now + lock_ttl)
                record = self._load(key, now)
                decision = ALLOW
                if rate_key is not None and rate is not None:
                    decision = self._hit(rate_key, rate, now)
                return Turn(key=key, record=record, token=token, rate=decision)
            remaining = deadline - now
            if remaining <= 0:
                raise LockTimeoutError(f"chat {key.chat_id} stayed locked for more than {wait:g}s")
            # Woken by a release, or at the holder's expiry, whichever comes first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    held.released.wait(), timeout=min(remaining, held.expires_at - now)
                )
            now = self._clock()

    async def commit(self, turn: Turn, record: StateRecord | None, *, ttl: int) -> None:
        payload = None if record is None or record.is_empty else encode_record(record)
        now = self._clock()
        held = self._locks.get(turn.key)
        if held is None or held.token != turn.token or held.expires_at <= now:
            raise LockTimeoutError(
                f"chat {turn.key.chat_id}: the lock expired before this update was saved; "
                "nothing was written"
            )
        if record is None:
            stored = self._records.get(turn.key)
            if stored is not None and stored.expires_at > now:
                stored.expires_at = now + ttl
        elif payload is None:
            self._records.pop(turn.key, None)
        else:
            self._records[turn.key] = _Stored(payload, now + ttl)
        self._unlock(turn.key, held)

    async def release(self, turn: Turn) -> None:
        held = self._locks.get(turn.key)
        if held is not None and held.token == turn.token:
            self._unlock(turn.key, held)

    async def peek(self, key: ChatKey) -> StateRecord:
        return self._load(key, self._clock())

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        for held in self._locks.values():
            held.released.set()
        self._records.clear()
        self._locks.clear()
        self._windows.clear()

    def _unlock(self, key: ChatKey, held: _HeldLock) -> None:
        del self._locks[key]
        held.released.set()

    def _load(self, key: ChatKey, now: float) -> StateRecord:
        stored = self._records.get(key)
        if stored is None:
            return EMPTY
        if stored.expires_at <= now:
            del self._records[key]
            return EMPTY
        return decode_record(stored.raw, key)

    def _hit(self, rate_key: str, rate: RateLimit, now: float) -> RateDecision:
        window = self._windows.get(rate_key)
        if window is None or window.expires_at <= now:
            window = self._windows[rate_key] = _Window(0, now + rate.window)
        window.hits += 1
        return rate_decision(window.hits, rate.limit)

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        self._records = _without_expired(self._records, now)
        self._windows = _without_expired(self._windows, now)
        # Locks only outlive their holder when it died; a waiter would have replaced them.
        for key in [k for k, held in self._locks.items() if held.expires_at <= now]:
            self._unlock(key, self._locks[key])


def _without_expired(entries: dict[_Key, _Entry], now: float) -> dict[_Key, _Entry]:
    """Drop expired entries. A dict never shrinks its table on delete, so after a large purge
    a fresh copy is returned: this is what keeps memory flat after a burst of chats."""
    expired = [k for k, v in entries.items() if v.expires_at <= now]
    for k in expired:
        del entries[k]
    if len(expired) > 1024 and len(expired) > len(entries):
        return dict(entries)
    return entries
