"""Telegram's outgoing flood limits as token buckets: per chat, and for the whole bot."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    """How much the sandbox lets a bot send before answering 429.

    Telegram tolerates short bursts into one chat and then about one message a second; across
    all chats about 30 a second. The overall burst is larger than PTB's ``AIORateLimiter`` bucket
    (30 at once, then 30/s) so a bot that uses it at its defaults never sees a 429 from the
    overall limit.
    """

    per_chat_burst: int = 20
    per_chat_rate: float = 1.0
    overall_burst: int = 50
    overall_rate: float = 30.0
    count_edits: bool = True
    enabled: bool = True


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available (0 when one is available now)."""
        self._refill(now)
        if self.tokens >= 1:
            return 0.0
        if self.rate <= 0:
            return math.inf
        return (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


class FloodControl:
    """Decides whether one more message may go to a chat now, and if not, for how long not."""

    def __init__(self, limits: SandboxLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._overall = TokenBucket(limits.overall_burst, limits.overall_rate, clock())
        self._chats: dict[int, TokenBucket] = {}

    def reconfigure(self, limits: SandboxLimits) -> None:
        self.limits = limits
        now = self._clock()
        self._overall = TokenBucket(limits.overall_burst, limits.overall_rate, now)
        self._chats.clear()

    def acquire(self, chat_id: int) -> int:
        """Take a token for ``chat_id``; 0 when allowed, else the ``retry_after`` seconds."""
        if not self.limits.enabled:
            return 0
        now = self._clock()
        chat = self._chats.get(chat_id)
        if chat is None:
            if len(self._chats) > 10_000:
                self._forget_idle(now)
            chat = TokenBucket(self.limits.per_chat_burst, self.limits.per_chat_rate, now)
            self._chats[chat_id] = chat
        wait = max(chat.wait_time(now), self._overall.wait_time(now))
        if wait > 0:
            return max(1, math.ceil(wait))
        chat.take(now)
        self._overall.take(now)
        return 0

    def _forget_idle(self, now: float) -> None:
        for chat_id, bucket in list(self._chats.items()):
            if bucket.is_full(now):
                del self._chats[chat_id]
