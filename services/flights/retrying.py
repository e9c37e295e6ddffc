"""How the HTTP flight providers (Kiwi, Duffel) retry: what is worth another try, and how long
to wait before it."""

from __future__ import annotations

from tenacity import RetryCallState, wait_exponential_jitter


class RetryableError(Exception):
    """A response worth trying again: 5xx, 429 or a dropped connection."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class RetryPolicy:
    """backoff, 2x backoff, 4x... up to ``max_backoff``, plus up to one backoff of jitter; or
    the provider's own Retry-After when it gives one. A Retry-After above ``max_retry_after``
    is not waited out: the traveller would be left waiting, so the call fails at once."""

    def __init__(self, *, backoff: float, max_backoff: float, max_retry_after: float) -> None:
        self._jitter = wait_exponential_jitter(multiplier=backoff, max=max_backoff, jitter=backoff)
        self._max_retry_after = max_retry_after

    def worth_retrying(self, exc: BaseException) -> bool:
        if not isinstance(exc, RetryableError):
            return False
        return exc.retry_after is None or exc.retry_after <= self._max_retry_after

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._jitter(state))
