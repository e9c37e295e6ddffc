"""The hook the booking service calls when a booking is confirmed or refunded: the lead
traveller gets an email about it, sent as a background job (services/jobs).

The chat never waits for the mail server: ``confirmed`` and ``refunded`` only hand a job over
and return. The job names the booking (its id, reference and the refunded amount), never the
traveller: whoever runs it loads the booking from storage, so nothing personal sits in Redis.
A server that is down or says "try later" is retried with growing pauses (the job's backoff);
after ``attempts`` tries, or at once when the server refuses the message for good (SMTP 5xx),
it gives up with a log line and an admin alert. Log lines and alerts name the booking reference
and what failed, never the address or anything the traveller typed.

On the embedded queue, emails waiting for a retry are lost with the process (the log says
which); on arq they wait in Redis for a worker. The traveller has the confirmation in the chat
either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from email.message import EmailMessage
from typing import Any, Protocol

from services.jobs.base import Backoff, JobCatalogue, JobQueue
from services.jobs.embedded import EmbeddedJobs
from services.mail.base import EmailRejectedError, EmailSender, EmailUnavailableError
from services.mail.compose import confirmation_email, refund_email
from services.messages import esc
from services.models import Booking
from services.money import Money

log = logging.getLogger(__name__)

SEND_RECEIPT = "email.receipt"  # the job's name in the catalogue


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
    """``BookingReceipts`` by email, through an ``EmailSender``, as ``SEND_RECEIPT`` jobs.

    ``jobs``: the process's queue, whose catalogue has ``register``'s task (bot/jobs.py);
    without one, the receipts run their own embedded queue (tests, benchmarks)."""

    def __init__(
        self,
        sender: EmailSender,
        *,
        sender_address: str,
        load: Callable[[str], Awaitable[Booking | None]],
        jobs: JobQueue | None = None,
        alert_admins: Callable[[str], Awaitable[None]] | None = None,
        attempts: int = 8,
        first_retry: float = 5.0,
        longest_wait: float = 300.0,
        concurrency: int = 2,
    ) -> None:
        self._sender = sender
        self._from = sender_address
        self._load = load
        self._alert_admins = alert_admins
        self.backoff = Backoff(
            attempts=max(attempts, 1),
            first=first_retry,
            longest=max(longest_wait, first_retry),
        )
        # A burst (a reconciliation sweep confirming many bookings) builds and sends a few at a
        # time: building runs in threads that share the GIL with the event loop.
        self._slots = asyncio.Semaphore(max(concurrency, 1))
        self._owns_jobs = jobs is None
        if jobs is None:
            catalogue = JobCatalogue()
            self.register(catalogue)
            jobs = EmbeddedJobs(catalogue)
        self._jobs = jobs

    def register(self, catalogue: JobCatalogue) -> None:
        """The email job, in the catalogue of whichever process runs jobs."""
        catalogue.task(
            SEND_RECEIPT,
            self.send,
            backoff=self.backoff,
            retry_on=(EmailUnavailableError,),
            gave_up=self.gave_up,
        )

    # the hook ---------------------------------------------------------------------------------
    def confirmed(self, booking: Booking) -> None:
        self._jobs.submit(
            SEND_RECEIPT, kind="confirmation", booking_id=booking.id, reference=booking.reference
        )

    def refunded(self, booking: Booking, amount: Money, *, full: bool) -> None:
        self._jobs.submit(
            SEND_RECEIPT,
            kind="refund",
            booking_id=booking.id,
            reference=booking.reference,
            amount=amount.amount,
            currency=amount.currency,
            full=full,
        )

    # background work --------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Jobs this process handed over and has not finished (embedded) or queued (arq)."""
        return self._jobs.pending

    async def drain(self) -> None:
        """Until every email started so far is sent or given up on (embedded) or queued."""
        await self._jobs.drain()

    async def close(self, grace: float = 10.0) -> None:
        """On shutdown, when the receipts run their own queue: emails in flight get ``grace``
        seconds, the rest are dropped with a log line."""
        if self._owns_jobs:
            await self._jobs.close(grace)

    async def send(
        self,
        *,
        kind: str,
        booking_id: str,
        reference: str,
        amount: int | None = None,
        currency: str | None = None,
        full: bool = True,
    ) -> None:
        """The job's body: one try. ``EmailUnavailableError`` propagates (the queue retries)."""
        label = f"{kind} email for booking {reference}"
        booking = await self._load(booking_id)
        if booking is None:
            log.info("no %s: the booking is gone", label)
            return
        build: Callable[[], EmailMessage | None]
        if kind == "refund" and amount is not None and currency is not None:
            refunded = Money(amount=amount, currency=currency)
            build = lambda: refund_email(booking, refunded, full=full, sender=self._from)  # noqa: E731
        else:
            build = lambda: confirmation_email(booking, sender=self._from)  # noqa: E731
        # The stdlib's email package takes some 10-20 ms to build a message with an attachment
        # (benchmarks/mail.py): off the event loop, so chats in flight do not wait for it.
        async with self._slots:
            message = await asyncio.to_thread(build)
        if message is None:
            log.info("no %s: the lead traveller gave no address", label)
            return
        try:
            async with self._slots:
                await self._sender.send(message)
        except EmailRejectedError as error:
            log.warning("%s refused, not retried: %s", label, error)
            await self._alert(f"📧 The {esc(label)} was refused: {esc(str(error))}. Not retried.")
            return
        log.info("%s sent (%s)", label, self._sender.name)

    async def gave_up(self, error: BaseException, job: Mapping[str, Any]) -> None:
        label = f"{job.get('kind', 'booking')} email for booking {job.get('reference', '?')}"
        log.warning("%s given up after %d tries: %s", label, self.backoff.attempts, error)
        await self._alert(
            f"📧 The {esc(label)} could not be sent after {self.backoff.attempts} tries: "
            f"{esc(str(error))}."
        )

    async def _alert(self, text: str) -> None:
        if self._alert_admins is None:
            return
        try:
            await self._alert_admins(f"{text} The traveller has the message in the chat.")
        except Exception:  # alerting must never take the email task down
            log.exception("could not alert the admins about an email")
