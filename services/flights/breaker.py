"""A circuit breaker: after repeated failures, fail at once for a while instead of waiting.

A traveller gets "search is unavailable, try again in a minute" in milliseconds while the
provider is down, rather than each search waiting out its own timeout and retries.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from services.flights.base import ProviderUnavailableError


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls fail at once
    HALF_OPEN = "half_open"  # the cool-down is over: the next call is a trial


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures, for ``reset_after`` seconds."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        reset_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._threshold = threshold
        self._reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self._reset_after:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def retry_in(self) -> float:
        """Seconds until a call is let through again (0 when it would be now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._reset_after - (self._clock() - self._opened_at))

    def check(self) -> None:
        """Raise ``ProviderUnavailableError`` while open; let the call through otherwise."""
        if self.state is BreakerState.OPEN:
            wait = self.retry_in
            raise ProviderUnavailableError(
                "Flight search is unavailable right now: try again in a minute.",
                retry_after=wait,
            )

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failure(self) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            # A failed trial re-opens for a full period.
            self._opened_at = self._clock()
