"""The hook the booking service calls when a booking is confirmed or refunded: the lead
traveller gets an email about it, sent in the background.

The chat never waits for the mail server: ``confirmed`` and ``refunded`` only start a task and
return. The task retries a server that is down or says "try later" with growing pauses, and
gives up with a log line and an admin alert after ``attempts`` tries, or at once when the
server refuses the message for good (SMTP 5xx). Log lines and alerts name the booking
reference and what failed, never the address or anything the traveller typed.

Pending emails live in this process: a restart drops those still waiting for a retry (the log
says which). The traveller has the confirmation in the chat either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from services.mail.base import EmailRejectedError, EmailSender, EmailUnavailableError
from services.mail.compose import confirmation_email, refund_email
from services.messages import esc
from services.models import Booking
from services.money import Money

log = logging.getLogger(__name__)


class BookingReceipts(Protocol):
    """What the booking service tells, besides the chat, when a booking is settled."""

    def confirmed(self, booking: Booking) -> None: ...

    def refunded(self, booking: Booking, amount: Money, *, full: bool) -> None: ...


class NoReceipts:
    """No emails (a booking service built without a sender, as in most tests)."""

    def confirmed(self, booking: Booking) -> None:
        return None

    def refunded(self, booking: Booking, amount: Money, *, full: bool) -> None:
        return None


NO_RECEIPTS = NoReceipts()


class EmailReceipts:
    """``BookingReceipts`` by email, through an ``EmailSender``."""

    def __init__(
        self,
        sender: EmailSender,
        *,
        sender_address: str,
        alert_admins: Callable[[str], Awaitable[None]] | None = None,
        attempts: int = 8,
        first_retry: float = 5.0,
        longest_wait: float = 300.0,
        concurrency: int = 2,
    ) -> None:
        self._sender = sender
        self._from = sender_address
        self._alert_admins = alert_admins
        self._attempts = max(attempts, 1)
        self._first_retry = first_retry
        self._longest_wait = longest_wait
        self._tasks: dict[asyncio.Task[None], str] = {}
        # A burst (a reconciliation sweep confirming many bookings) builds and sends a few at a
        # time: building runs in threads that share the GIL with the event loop.
        self._slots = asyncio.Semaphore(max(concurrency, 1))

    # the hook ---------------------------------------------------------------------------------
    def confirmed(self, booking: Booking) -> None:
        self._start("confirmation", booking, lambda: confirmation_email(booking, sender=self._from))

    def refunded(self, booking: Booking, amount: Money, *, full: bool) -> None:
        self._start(
            "refund",
            booking,
            lambda: refund_email(booking, amount, full=full, sender=self._from),
        )

    # background work --------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Emails not yet sent or given up on."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every email started so far is sent or given up on."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, grace: float = 10.0) -> None:
        """On shutdown: give emails in flight ``grace`` seconds, then drop the rest, saying
        which bookings did not get theirs."""
        if not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), timeout=grace)
        for task, label in list(self._tasks.items()):
            log.warning("shutting down: the %s was not sent", label)
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, kind: str, booking: Booking, build: Callable[[], EmailMessage | None]) -> None:
        label = f"{kind} email for booking {booking.reference}"
        task = asyncio.create_task(self._deliver(label, build), name=label)
        self._tasks[task] = label
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("the email task failed", exc_info=task.exception())

    async def _deliver(self, label: str, build: Callable[[], EmailMessage | None]) -> None:
        # The stdlib's email package takes some 10-20 ms to build a message with an attachment
        # (benchmarks/mail.py): off the event loop, so chats in flight do not wait for it.
        async with self._slots:
            message = await asyncio.to_thread(build)
        if message is None:
            log.info("no %s: the lead traveller gave no address", label)
            return
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(
                multiplier=self._first_retry, max=self._longest_wait, jitter=self._first_retry
            ),
            retry=retry_if_exception_type(EmailUnavailableError),
            before_sleep=lambda state: self._log_retry(label, state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    async with self._slots:  # not held while waiting to retry
                        await self._sender.send(message)
        except EmailRejectedError as error:
            log.warning("%s refused, not retried: %s", label, error)
            await self._alert(f"📧 The {esc(label)} was refused: {esc(str(error))}. Not retried.")
            return
        except EmailUnavailableError as error:
            log.warning("%s given up after %d tries: %s", label, self._attempts, error)
            await self._alert(
                f"📧 The {esc(label)} could not be sent after {self._attempts} tries: "
                f"{esc(str(error))}."
            )
            return
        log.info("%s sent (%s)", label, self._sender.name)

    def _log_retry(self, label: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info(
            "%s not sent (try %d of %d: %s); retrying in %.0f s",
            label,
            state.attempt_number,
            self._attempts,
            error,
            wait,
        )

    async def _alert(self, text: str) -> None:
        if self._alert_admins is None:
            return
        try:
            await self._alert_admins(f"{text} The traveller has the message in the chat.")
        except Exception:  # alerting must never take the email task down
            log.exception("could not alert the admins about an email")
