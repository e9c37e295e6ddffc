"""The booking service: the one way a booking is created, paid, ticketed, cancelled or refunded.

Every status change is a conditional update in storage (``transition``), and whoever wins a
transition does what follows it (ticketing, the message to the traveller, the refund). So
duplicate, late and out-of-order payment events, and any number of concurrent workers, lead to
one outcome and one message: the status rules decide, never the arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import ValidationError

from services import metrics, texts
from services.flights.base import (
    FareChangedError,
    FareIncreasedError,
    FareUnavailableError,
    FlightProvider,
    OrderJournal,
    ProviderError,
    ProviderEvent,
    ProviderUnavailableError,
    Recheck,
    Ticket,
)
from services.mail.receipts import NO_RECEIPTS, BookingReceipts
from services.messages import Message
from services.models import (
    BOOKED_STATUSES,
    REFUND_FROM_STATUSES,
    UNPAID_STATUSES,
    AuditEntry,
    Booking,
    BookingStatus,
    Fulfilment,
    Itinerary,
    NewBooking,
    Passengers,
    Traveller,
    utcnow,
)
from services.money import Money
from services.notify import Notifier
from services.payments.base import (
    CheckoutSession,
    PaymentError,
    PaymentEvent,
    PaymentGateway,
    PaymentUnavailableError,
    Refund,
)
from services.payments.events import (
    ASYNC_PAYMENT_FAILED,
    ASYNC_PAYMENT_SUCCEEDED,
    CHARGE_REFUNDED,
    CHECKOUT_COMPLETED,
    CHECKOUT_EXPIRED,
    event_booking_id,
)
from services.storage.base import Storage

log = logging.getLogger(__name__)

S = BookingStatus
# A link with less time left than this is replaced rather than sent again.
MIN_LINK_TIME_LEFT = timedelta(minutes=5)
# A fare the airline keeps for less than this cannot be paid safely: a payment link lasts at
# least 30 minutes (Stripe's minimum), and it must never outlive the fare.
MIN_FARE_TIME_LEFT = timedelta(minutes=31)
# The link closes this long before the airline's hold ends, so a payment made at the last
# second still reaches the airline in time.
FARE_HOLD_SLACK = timedelta(minutes=1)
REFUND_RECORD_TYPE = "refund.created"  # how our own refunds appear in a booking's event history
# Payment links are Checkout Sessions at Stripe; old buttons never expire, so these caps are
# what stops one traveller making dozens a minute.
# A refund claim unsettled this long has no worker any more: a refund call, retries included,
# is over in well under two minutes.
REFUND_CLAIM_STALE = timedelta(minutes=15)
MAX_OPEN_LINKS_PER_USER = 3  # unpaid bookings whose link is still payable
MAX_RENEWALS_PER_BOOKING = 5  # new links for one booking after its first


class BookingError(Exception):
    """A request about a booking that cannot be carried out. ``str()`` is plain text (escape it
    for HTML) that can be shown to the person who asked."""


class UnknownBookingError(BookingError):
    pass


class CancellationRefusedError(BookingError):
    pass


class RenewalRefusedError(BookingError):
    pass


class TooManyLinksError(RenewalRefusedError):
    """A cap on payment links was reached; ``str()`` says what to do instead."""


class NothingToRefundError(BookingError):
    pass


class AlreadyRefundedError(NothingToRefundError):
    """Everything paid was refunded already, or another worker is refunding it right now."""


class RefundFailedError(BookingError):
    """The booking was cancelled but the money could not be sent back yet; admins are alerted."""


class RefundUnconfirmedError(PaymentUnavailableError):
    """Stripe gave no answer to a refund, nor to the question whether it was made. Its amount
    stays claimed on the booking, so nobody can send that money back a second time."""


# Bookings settled per sweep; the rest wait for the next minute.
OVERDUE_BATCH = 200
# How long after its deadline an expired booking's session is still asked about (a payment
# completed at the deadline whose event never came).
EXPIRED_LOOKBACK = timedelta(hours=2)
# A fulfilment lease kept for good: the booking waits for a person.
PARKED = timedelta(days=3650)
FARE_INCREASE_ACTIONS = ("refund", "ask_admin")
# Ledger rows that remember a one-time notice or check (see BookingService._once).
NOTICE_PREFIX = "notice:"


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it.

    Serialises a worker's own work on one booking or user; across workers the conditional
    status updates in storage are what make an outcome single.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(frozen=True, slots=True)
class Erasure:
    """What /deletedata does (or did) to a traveller's bookings."""

    cancelled: tuple[Booking, ...]  # unpaid: cancelled and their payment links closed
    kept: tuple[Booking, ...]  # upcoming trips: travellers kept until the trip is over
    anonymised: int = 0  # bookings whose travellers were erased now


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A traveller's cancellation, done: the booking as it ended and what went back to the
    card by it (zero for a non-refundable fare). The chat tells the traveller from this."""

    booking: Booking
    refunded: Money


# Refund rules: the one place that says what goes back. The chat asks these before it offers a
# button, and the service applies them again under the booking's lock before any money moves.
def cancellation_refund(booking: Booking, airline_refund: Money | None) -> Money:
    """What a traveller's cancellation gives back: what the airline refunds (None: there is no
    airline order, so everything), never more than is left after refunds already sent."""
    left = booking.refundable
    return left if airline_refund is None or airline_refund >= left else airline_refund


def cancellation_refusal(booking: Booking, now: datetime) -> CancellationRefusedError | None:
    """Why the traveller cannot cancel ``booking`` at ``now``, as the error to raise or show;
    None when they can: a confirmed booking whose flight has not left yet."""
    if booking.status is not S.CONFIRMED:
        return CancellationRefusedError(texts.cannot_cancel(booking))
    if booking.itinerary.departure <= now:
        return CancellationRefusedError(texts.already_departed(booking))
    return None


def refund_refusal(booking: Booking, amount: Money | None = None) -> NothingToRefundError | None:
    """Why an admin's refund of ``amount`` (None: all that is left) cannot go ahead, as the
    error to raise or show; None when it can."""
    if booking.status is S.REFUNDED:
        return AlreadyRefundedError(texts.already_refunded(booking))
    if not booking.status.holds_payment or booking.payment_intent_id is None:
        return NothingToRefundError(texts.nothing_to_refund(booking))
    if amount is not None:
        if amount.currency != booking.amount.currency:
            return NothingToRefundError(
                f"Booking {booking.reference} was paid in {booking.amount.currency}, "
                f"not {amount.currency}."
            )
        if amount.amount <= 0:
            return NothingToRefundError("The refund amount must be more than zero.")
        if amount > booking.amount:
            return NothingToRefundError(texts.refund_too_large(booking, amount))
    if booking.refundable.amount <= 0:
        return AlreadyRefundedError(texts.already_refunded(booking))
    if amount is not None and amount > booking.refundable:
        return NothingToRefundError(texts.refund_exceeds_what_is_left(booking, amount))
    return None


class BookingService:
    """Bookings from 'Pay' to confirmation, refund or expiry."""

    def __init__(
        self,
        storage: Storage,
        provider: FlightProvider,
        gateway: PaymentGateway,
        notifier: Notifier,
        *,
        success_url: Callable[[Booking], str],
        cancel_url: Callable[[Booking], str],
        payment_window: timedelta = timedelta(minutes=30),
        alert_admins: Callable[[str], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = utcnow,
        receipts: BookingReceipts = NO_RECEIPTS,
        max_open_links: int = MAX_OPEN_LINKS_PER_USER,
        max_renewals: int = MAX_RENEWALS_PER_BOOKING,
        stuck_after: timedelta = timedelta(minutes=3),
        fare_tolerance_percent: Decimal = Decimal(0),
        fare_increase_action: str = "refund",
        worker_id: str | None = None,
    ) -> None:
        """``stuck_after``: how long a paid booking may sit before reconciliation takes it
        over, and the ticketing lease. ``fare_tolerance_percent``: how far above the payment
        a provider's final total may be and still be bought; above it,
        ``fare_increase_action`` "refund" refunds, "ask_admin" leaves it to an admin."""
        self._storage = storage
        self._max_open_links = max_open_links
        self._max_renewals = max_renewals
        self._provider = provider
        self._gateway = gateway
        self._notifier = notifier
        self._success_url = success_url
        self._cancel_url = cancel_url
        self._payment_window = payment_window
        self._alert_admins = alert_admins
        self._now = clock
        self._receipts = receipts  # emails the lead traveller; never waits for the server
        self._booking_locks = _KeyedLocks()
        self._stuck_after = stuck_after
        self._lease = stuck_after
        self._fare_tolerance = fare_tolerance_percent
        if fare_increase_action not in FARE_INCREASE_ACTIONS:
            raise ValueError(f"fare_increase_action must be one of {FARE_INCREASE_ACTIONS}")
        self._fare_increase_action = fare_increase_action
        self._worker_id = worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        )
        self._user_locks = _KeyedLocks()

    # lookups ---------------------------------------------------------------------------------
    async def booking_for_session(self, session_id: str) -> Booking | None:
        return await self._storage.get_booking_by_session(session_id)

    async def get(self, user_id: int | None, reference: str) -> Booking:
        """The user's own booking; someone else's reference is simply not found. ``None``:
        anyone's (admins)."""
        booking = await self._storage.get_booking_by_reference(reference.strip(), user_id=user_id)
        if booking is None:
            raise UnknownBookingError(texts.no_such_booking(reference))
        return booking

    # before payment --------------------------------------------------------------------------
    async def recheck(self, itinerary: Itinerary, passengers: Passengers) -> Recheck:
        """The provider's live price and availability (ProviderUnavailableError passes)."""
        return await self._provider.recheck(itinerary, passengers)

    async def start_checkout(
        self, user_id: int, itinerary: Itinerary, travellers: tuple[Traveller, ...]
    ) -> tuple[Booking, CheckoutSession]:
        """Create the booking and its payment link.

        The amount is the itinerary's price as the provider quoted it; nothing the user sends
        reaches it. Pressing Pay again for the same itinerary and travellers while the link is
        still good returns the same booking and link, so a double tap makes one session.
        Gateway failures raise ``PaymentError``; a booking that cannot be made raises
        ``BookingError``.
        """
        if not travellers:
            raise BookingError("Add at least one traveller before paying.")
        if itinerary.departure <= self._now():
            raise BookingError("This flight has already left. /start to search again.")
        if itinerary.price.amount <= 0:
            raise BookingError("This fare has no price; please pick another flight.")
        async with self._user_locks.hold(f"user:{user_id}"):
            reused = await self._reusable_checkout(user_id, itinerary, travellers)
            if reused is not None:
                return reused
            await self._check_open_links(user_id)
            deadline = self._now() + self._payment_window
            booking = await self._storage.create_booking(
                NewBooking(
                    user_id=user_id,
                    itinerary=itinerary,
                    travellers=travellers,
                    amount=itinerary.price,
                    status=S.DRAFT,
                    payment_deadline=deadline,
                )
            )
            booking, deadline = await self._hold_order(booking, deadline)
            try:
                session = await self._gateway.create_checkout(
                    booking,
                    success_url=self._success_url(booking),
                    cancel_url=self._cancel_url(booking),
                    expires_at=deadline,
                    idempotency_key=f"checkout:{booking.id}:1",
                )
            except PaymentError:
                await self._release_order(booking)  # no link, so nobody will pay this hold
                raise
            await self._storage.attach_checkout(
                booking.id, checkout_session_id=session.id, payment_deadline=session.expires_at
            )
            await self._storage.transition(booking.id, S.DRAFT, S.AWAITING_PAYMENT)
            log.info("booking %s awaiting payment (%s)", booking.reference, booking.amount)
            metrics.payment("link_created")
            return await self._reload(booking), session

    async def _reusable_checkout(
        self, user_id: int, itinerary: Itinerary, travellers: tuple[Traveller, ...]
    ) -> tuple[Booking, CheckoutSession] | None:
        pending = await self._storage.list_bookings_by_status(S.AWAITING_PAYMENT, user_id=user_id)
        for booking in pending:
            same = (
                booking.itinerary.id == itinerary.id
                and booking.travellers == travellers
                and booking.amount == itinerary.price
            )
            if not same or booking.checkout_session_id is None:
                continue
            try:
                session = await self._gateway.retrieve_checkout(booking.checkout_session_id)
            except PaymentUnavailableError:
                raise
            except PaymentError:
                continue
            if self._still_good(session):
                return booking, session
        return None

    async def _check_open_links(self, user_id: int, *, besides: str | None = None) -> None:
        """Refuse another payable link while the traveller has ``max_open_links`` of them.

        Serialised per user within a worker (the user lock); two workers at the same moment
        may each let one more through, which a cap on spam can afford."""
        now = self._now()
        count = 0
        for status in UNPAID_STATUSES:
            for booking in await self._storage.list_bookings_by_status(status, user_id=user_id):
                if booking.id == besides or (booking.payment_deadline or now) < now:
                    continue
                if booking.status is S.EXPIRED:
                    # Expired, but renewed since? Only the gateway knows if its link is open
                    # (few bookings: their deadline is within the last payment window).
                    session = await self._current_session(booking)
                    if session is None or session.status != "open":
                        continue
                count += 1
        if count >= self._max_open_links:
            raise TooManyLinksError(texts.too_many_open_links(count))

    def _still_good(self, session: CheckoutSession) -> bool:
        return session.status == "open" and session.expires_at - self._now() > MIN_LINK_TIME_LEFT

    async def renew_checkout(self, user_id: int, reference: str) -> tuple[Booking, CheckoutSession]:
        """A payment link for a booking that is awaiting payment or whose link expired.

        A link still good is sent again; otherwise the fare is re-checked with the provider (a
        sold-out fare or a changed price is refused plainly) and a new session is made. An
        expired booking keeps its status: paying the new link moves it expired → paid.
        """
        booking = await self.get(user_id, reference)
        async with self._booking_locks.hold(booking.id):
            booking = await self._reload(booking)
            if not booking.status.unpaid:
                raise RenewalRefusedError(texts.cannot_renew(booking))
            if booking.itinerary.departure <= self._now():
                raise RenewalRefusedError(texts.already_departed(booking))
            current = await self._current_session(booking)
            if current is not None and self._still_good(current):
                return booking, current
            if current is not None and current.status == "open":
                current = await self._close_session(current)
            if current is not None and current.payment_status == "paid":
                await self._apply_payment(booking, current)
                booking = await self._reload(booking)
                if not booking.status.unpaid:
                    raise RenewalRefusedError(texts.already_paid(booking))
                # another amount was paid and refunded: the traveller may pay the fare anew
            await self._check_open_links(booking.user_id, besides=booking.id)
            renewal = await self._storage.claim_checkout_renewal(booking.id, self._max_renewals)
            if renewal is None:
                raise TooManyLinksError(texts.too_many_links(booking, self._max_renewals + 1))
            deadline = await self._check_held_fare(booking)
            session = await self._gateway.create_checkout(
                booking,
                success_url=self._success_url(booking),
                cancel_url=self._cancel_url(booking),
                expires_at=deadline,
                # One key per claimed renewal: a Stripe failure stored under one key is not
                # replayed to the traveller's next try.
                idempotency_key=f"checkout:{booking.id}:renewal:{renewal}",
            )
            booking = await self._storage.attach_checkout(
                booking.id, checkout_session_id=session.id, payment_deadline=session.expires_at
            )
            if booking.status is S.DRAFT:
                await self._storage.transition(booking.id, S.DRAFT, S.AWAITING_PAYMENT)
            log.info("booking %s has a new payment link", booking.reference)
            return await self._reload(booking), session

    async def _current_session(self, booking: Booking) -> CheckoutSession | None:
        if booking.checkout_session_id is None:
            return None
        try:
            return await self._gateway.retrieve_checkout(booking.checkout_session_id)
        except PaymentUnavailableError:
            raise
        except PaymentError:
            return None

    async def _close_session(self, session: CheckoutSession) -> CheckoutSession:
        """Expire an open session that is about to run out, so only one link can be paid."""
        try:
            await self._gateway.expire_checkout(session.id)
        except PaymentUnavailableError:
            raise
        except PaymentError:
            pass  # it may have been paid a moment ago: the fresh copy below says
        return await self._gateway.retrieve_checkout(session.id)

    async def _check_fare(self, booking: Booking) -> None:
        try:
            passengers = booking.passengers
        except ValidationError:
            raise RenewalRefusedError(texts.fare_gone(booking)) from None
        check = await self._provider.recheck(booking.itinerary, passengers)
        if not check.available:
            raise RenewalRefusedError(texts.fare_gone(booking))
        if check.price != booking.amount:
            raise RenewalRefusedError(texts.fare_changed(booking, check.price))

    async def abandon(self, user_id: int, reference: str) -> bool:
        """The traveller gives up on paying ("Cancel this booking", or Stripe's cancel_url
        back into the chat): the unpaid booking is cancelled and its link closed.

        Returns whether there was an unpaid booking to cancel. A payment that completed at
        that very moment is refunded when its event arrives (``refund_if_ended``).
        """
        booking = await self.get(user_id, reference)
        async with self._booking_locks.hold(booking.id):
            return await self._cancel_unpaid(await self._reload(booking))

    async def cancel_on_payment_page(self, session_id: str) -> Booking | None:
        """The payment page's Cancel: the booking is cancelled and the traveller told in the
        chat. None when the link is not the booking's current one (or there is none)."""
        booking = await self._storage.get_booking_by_session(session_id)
        if booking is None or booking.checkout_session_id != session_id:
            return None
        async with self._booking_locks.hold(booking.id):
            booking = await self._reload(booking)
            if await self._cancel_unpaid(booking):
                log.info("booking %s cancelled on the payment page", booking.reference)
                await self._tell(booking.user_id, texts.payment_cancelled(booking))
            return await self._reload(booking)

    async def _cancel_unpaid(self, booking: Booking) -> bool:
        """draft, awaiting_payment or expired → cancelled, then the link closed, so that it
        can no longer be paid."""
        if not booking.status.unpaid or not await self._storage.transition(
            booking.id, booking.status, S.CANCELLED
        ):
            return False
        if booking.checkout_session_id:
            try:
                await self._gateway.expire_checkout(booking.checkout_session_id)
            except PaymentError as error:  # already closed, or paid a moment ago (refunded)
                log.info("could not close the link of %s: %s", booking.reference, error)
        await self._release_order(booking)
        return True

    async def refund_if_ended(self, booking: Booking, session: CheckoutSession) -> bool:
        """For the payment path (``_apply_payment``): a booking the traveller ended before it
        was paid (cancelled, or erased by /deletedata) is never ticketed. Its payment is given
        back in full and the traveller told; returns True when that is so (the caller stops).

        One refund per payment whatever the number of deliveries: the money is claimed on the
        booking first, and the booking ends ``refunded`` with the payment recorded on it.
        """
        current = await self._reload(booking)
        intent = session.payment_intent
        if current.status is not S.CANCELLED or current.payment_intent_id is not None:
            return False
        if intent is None or session.amount.currency != current.amount.currency:
            await self._alert(texts.alert_payment_on_ended_booking(current, session.amount))
            return True
        # Its own lock key: callers may hold the booking's lock already (renew_checkout).
        async with self._booking_locks.hold(f"ended:{booking.id}"):
            attempt = await self._storage.reserve_refund(booking.id, session.amount.amount)
            if attempt is None:  # refunded already, or a second payment: a person must look
                await self._alert(texts.alert_payment_on_ended_booking(current, session.amount))
                return True
            key = f"refund:{booking.id}:ended:{attempt}"
            try:
                refund = await self._gateway.refund(
                    intent,
                    amount=session.amount,
                    reason="requested_by_customer",
                    idempotency_key=key,
                )
            except PaymentUnavailableError:
                found = None
                with contextlib.suppress(PaymentError):
                    found = await self._gateway.find_refund(intent, key)
                if found is None:
                    # Released and raised: the webhook answers 5xx, Stripe delivers the event
                    # again and the refund is tried again under a new key. The booking records
                    # no payment, so nobody else could refund it. Refunding the whole charge,
                    # a repeat of a refund that was made after all is refused by Stripe.
                    await self._storage.settle_refund(booking.id, session.amount.amount, sent=False)
                    raise
                refund = found
            except PaymentError as error:
                await self._storage.settle_refund(booking.id, session.amount.amount, sent=False)
                log.warning("late payment on %s not refunded: %s", current.reference, error)
                await self._alert(texts.alert_refund_failed(current, str(error)))
                await self._tell(current.user_id, texts.ended_booking_refund_pending(current))
                return True
            await self._storage.settle_refund(booking.id, session.amount.amount, sent=True)
            await self._storage.record_payment_event(refund.id, REFUND_RECORD_TYPE, booking.id)
            await self._storage.transition(
                booking.id, S.CANCELLED, S.REFUNDED, payment_intent_id=intent
            )
            log.info("late payment on cancelled booking %s refunded", current.reference)
            await self._tell(current.user_id, texts.ended_booking_refunded(current, refund.amount))
            return True

    async def expire_overdue(self) -> int:
        """Settle bookings whose payment deadline passed without an event (a missed webhook, or
        the sandbox, which has no timer): paid sessions are fulfilled, the rest expire and the
        traveller is told. Returns how many expired. Safe to run from several workers."""
        expired = 0
        now = self._now()
        for booking in await self._storage.list_overdue(now, limit=OVERDUE_BATCH):
            try:
                session = await self._current_session(booking)
                if session is not None and session.payment_status == "paid":
                    await self._apply_payment(booking, session)
                    continue
            except Exception:  # one booking's trouble must not stop the others
                log.warning("settling overdue %s failed", booking.reference, exc_info=True)
                continue
            if session is not None and session.status == "open":
                continue  # the gateway still takes payment; its own expiry event will come
            if await self._storage.transition(booking.id, S.AWAITING_PAYMENT, S.EXPIRED):
                metrics.payment("expired")
                expired += 1
                await self._tell(booking.user_id, texts.link_expired(booking))
        return expired

    # erasing a traveller's data -------------------------------------------------------------
    async def erasure_plan(self, user_id: int) -> Erasure:
        """What ``erase_user_data`` would do now: shown before the traveller confirms."""
        unpaid = [
            booking
            for status in UNPAID_STATUSES
            for booking in await self._storage.list_bookings_by_status(status, user_id=user_id)
        ]
        return Erasure(cancelled=tuple(unpaid), kept=tuple(await self._trips_to_keep(user_id)))

    async def erase_user_data(self, user_id: int) -> Erasure:
        """/deletedata: erase the traveller's profile and their bookings' personal data.

        Unpaid bookings are cancelled and their Checkout Sessions expired first, so no link of
        theirs can be paid any more (a payment already on its way is refunded when it arrives,
        see ``refund_if_ended``), and nothing is ever ticketed in an erased name. A paid or
        confirmed trip that is not over keeps its travellers, which the airline needs, until
        it lands or stops standing (cancelled, refunded); ``erase_held_data`` erases them then.
        """
        cancelled = []
        for status in UNPAID_STATUSES:
            for booking in await self._storage.list_bookings_by_status(status, user_id=user_id):
                async with self._booking_locks.hold(booking.id):
                    if await self._cancel_unpaid(await self._reload(booking)):
                        cancelled.append(booking)
        kept = await self._trips_to_keep(user_id)
        for booking in kept:
            await self._storage.hold_booking_data(booking.id, booking.trip_end)
        anonymised = await self._storage.delete_user_data(user_id)
        log.info(
            "user data erased: %d booking(s) anonymised, %d cancelled, %d kept until travelled",
            anonymised,
            len(cancelled),
            len(kept),
        )
        return Erasure(cancelled=tuple(cancelled), kept=tuple(kept), anonymised=anonymised)

    async def _trips_to_keep(self, user_id: int) -> list[Booking]:
        now = self._now()
        return [
            booking
            for status in BOOKED_STATUSES
            for booking in await self._storage.list_bookings_by_status(status, user_id=user_id)
            if booking.trip_end > now
        ]

    async def erase_held_data(self) -> int:
        """The sweep's step: erase the travellers that /deletedata kept for a trip that is now
        over or no longer stands. Returns how many bookings were erased."""
        erased = await self._storage.erase_held_bookings(self._now())
        if erased:
            log.info("erased the travellers of %d booking(s) kept until travelled", erased)
        return erased

    # payment events --------------------------------------------------------------------------
    async def handle_event(self, event: PaymentEvent) -> None:
        """Apply one verified gateway event until all its effects are done.

        The ledger notes the event when it arrives and marks it applied only once its effects
        are done. Any exception leaves it unapplied (the webhook answers 5xx, so Stripe
        retries), and the retry runs the effects again: each is a conditional step (a status
        transition, the fulfilment lease, an idempotency key), so what already happened does
        not happen twice and what did not happen is finished."""
        # Copies delivered to this worker at once take turns, so the second finds the first
        # done; across workers, the effects' own conditions make one outcome.
        async with self._booking_locks.hold(f"event:{event.id}"):
            await self._apply_event(event)

    async def _apply_event(self, event: PaymentEvent) -> None:
        booking = await self._booking_for_event(event)
        if not await self._storage.receive_payment_event(
            event.id, event.type, booking.id if booking else None
        ):
            log.info("event %s (%s) already handled", event.id, event.type)
            return
        if booking is None:
            log.warning("event %s (%s) is for no booking of ours", event.id, event.type)
        elif not await self._session_belongs(booking, event):
            pass  # refused and alerted
        elif event.type in (CHECKOUT_COMPLETED, ASYNC_PAYMENT_SUCCEEDED):
            await self._on_payment_event(booking, event)
        elif event.type == CHECKOUT_EXPIRED:
            await self._on_expired(booking, event)
        elif event.type == ASYNC_PAYMENT_FAILED:
            await self._on_async_failed(booking, event)
        elif event.type == CHARGE_REFUNDED:
            await self._on_charge_refunded(booking, event)
        else:
            log.info("event %s (%s) needs nothing", event.id, event.type)
        await self._storage.mark_payment_event_applied(event.id)

    async def _booking_for_event(self, event: PaymentEvent) -> Booking | None:
        booking_id = event_booking_id(event)
        if booking_id:
            booking = await self._storage.get_booking(booking_id)
            if booking is not None:
                return booking
        if event.session is not None:
            return await self._storage.get_booking_by_session(event.session.id)
        return None

    async def _session_belongs(self, booking: Booking, event: PaymentEvent) -> bool:
        """A session event must be about one of the booking's own sessions: the booking is
        found from the session's metadata, which only says which booking it claims to be for.
        An earlier session of the same booking (before a renewal) is its own, and paying it
        too is the duplicate-payment case; any other session is refused and alerted once."""
        session = event.session
        if session is None or session.id == booking.checkout_session_id:
            return True
        if session.id in await self._storage.list_checkout_sessions(booking.id):
            return True
        log.warning(
            "event %s: session %s was never booking %s's; refused",
            event.id,
            session.id,
            booking.reference,
        )
        if await self._once(f"session-mismatch:{session.id}", booking.id):
            await self._alert(
                texts.alert_session_mismatch(booking, session.id, session.payment_intent)
            )
        return False

    async def _on_payment_event(self, booking: Booking, event: PaymentEvent) -> None:
        session = event.session
        if session is None:
            return
        if session.payment_status != "paid":
            # A delayed method still settling, or an event older than the session's state.
            try:
                session = await self._gateway.retrieve_checkout(session.id)
            except PaymentError as error:
                # async_payment_succeeded (or expire_overdue) settles it later.
                log.info("booking %s: could not re-read the session: %s", booking.reference, error)
                return
            if session.payment_status != "paid":
                log.info("booking %s: payment still in flight", booking.reference)
                return
        await self._apply_payment(booking, session)

    async def _apply_payment(self, booking: Booking, session: CheckoutSession) -> None:
        """Money was taken: paid (from awaiting or expired: money taken wins), then ticket.

        Safe to repeat: a booking already paid by this very payment whose ticketing did not
        finish (a crash, a failed write) is ticketed now; one paid by another payment of the
        same booking is the duplicate-payment case."""
        if await self.refund_if_ended(booking, session):
            return
        if session.amount != booking.amount:
            await self._other_amount_paid(booking, session)
            return
        intent = session.payment_intent
        if booking.status is S.DRAFT:  # paid before its link was even recorded as sent
            await self._storage.transition(booking.id, S.DRAFT, S.AWAITING_PAYMENT)
        won = await self._storage.transition(
            booking.id, S.AWAITING_PAYMENT, S.PAID, payment_intent_id=intent
        ) or await self._storage.transition(booking.id, S.EXPIRED, S.PAID, payment_intent_id=intent)
        if not won:
            current = await self._reload(booking)
            if current.status is S.PAID and current.payment_intent_id in (None, intent):
                await self._fulfil(current)  # an earlier attempt stopped before the ticket
                return
            await self._maybe_duplicate_payment(booking, intent)
            return
        log.info("booking %s paid", booking.reference)
        metrics.payment("paid")
        await self._fulfil(await self._reload(booking))

    async def _other_amount_paid(self, booking: Booking, session: CheckoutSession) -> None:
        """A session of this booking was paid another amount or currency than the booking's
        (a discount code, an edited session): nothing is ticketed, the whole payment goes
        back, the traveller and the admins are told once, and the link counts as used up."""
        done = f"other-amount:{session.id}"
        if await self._noted(booking.id, done):
            return
        refund: Refund | None = None
        if session.payment_intent is not None:
            try:
                refund = await self._gateway.refund(
                    session.payment_intent,
                    amount=None,
                    reason="another amount than the fare was paid",
                    idempotency_key=f"refund:other-amount:{session.id}",
                )
            except PaymentError as error:
                # Not settled: raised, so the webhook answers 5xx and Stripe (or the sweep)
                # tries again; the admins hear of it once meanwhile.
                log.warning("other-amount payment on %s not refunded: %s", booking.reference, error)
                if await self._once(f"other-amount-refund-failed:{session.id}", booking.id):
                    await self._alert(
                        texts.alert_other_amount(booking, session.amount, session.id, False)
                    )
                raise
            await self._storage.record_payment_event(refund.id, REFUND_RECORD_TYPE, booking.id)
        log.warning("booking %s: session %s paid another amount", booking.reference, session.id)
        if booking.status is S.AWAITING_PAYMENT and session.id == booking.checkout_session_id:
            await self._storage.transition(booking.id, S.AWAITING_PAYMENT, S.EXPIRED)
        if await self._once(done, booking.id):
            if refund is not None:
                message = texts.other_amount_refunded(booking, refund.amount)
            else:  # nothing was charged to give back (no payment on the session)
                message = texts.other_amount_refund_pending(booking, session.amount)
            await self._tell(booking.user_id, message)
            await self._alert(
                texts.alert_other_amount(booking, session.amount, session.id, refund is not None)
            )

    async def _maybe_duplicate_payment(self, booking: Booking, intent: str | None) -> None:
        """A second session of the same booking was paid too: give that money back, once.

        As with another amount paid: a refund that fails is raised (the webhook answers 5xx and
        Stripe delivers again), and the admins hear of the failure once; the refund's key is
        the payment's, so a retry never refunds twice."""
        current = await self._reload(booking)
        if intent is None or current.payment_intent_id in (None, intent):
            return
        done = f"duplicate:{intent}"
        if await self._noted(booking.id, done):
            return
        try:
            refund = await self._gateway.refund(
                intent,
                amount=None,
                reason="duplicate",
                idempotency_key=f"refund:duplicate:{intent}",
            )
        except PaymentError as error:
            log.warning("duplicate payment on %s not refunded: %s", booking.reference, error)
            if await self._once(f"duplicate-refund-failed:{intent}", booking.id):
                await self._alert(texts.alert_duplicate_payment(current, intent, False))
            raise
        await self._storage.record_payment_event(refund.id, REFUND_RECORD_TYPE, booking.id)
        if await self._once(done, booking.id):
            await self._tell(
                current.user_id, texts.duplicate_payment_refunded(current, refund.amount)
            )
            await self._alert(texts.alert_duplicate_payment(current, intent, True))

    async def _fulfil(self, booking: Booking) -> bool:
        """Ticket a paid booking, once across workers and attempts.

        Whoever holds the booking's fulfilment lease tickets it (renewing the lease while the
        provider works); a worker that dies leaves the lease to run out, and reconciliation
        takes the booking over. The journal carries what an earlier attempt got done: a ticket
        already issued is not bought again, only confirmed. Returns whether this worker made
        the attempt (False: another holds the lease, or the booking is no longer paid)."""
        async with self._booking_locks.hold(f"fulfil:{booking.id}"):
            now = self._now()
            journal = await self._storage.claim_fulfilment(
                booking.id, self._worker_id, now=now, until=now + self._lease
            )
            if journal is None:
                log.info("booking %s is being ticketed by another worker", booking.reference)
                return False
            current = await self._reload(booking)
            if current.status is not S.PAID:
                await self._storage.release_fulfilment(booking.id, self._worker_id)
                return False
            async with self._lease_renewed(booking.id):
                release = await self._ticket_and_confirm(current, journal)
            if release:
                await self._storage.release_fulfilment(booking.id, self._worker_id)
            return True

    async def _ticket_and_confirm(self, booking: Booking, journal: Fulfilment) -> bool:
        """One ticketing attempt under the lease. Returns whether to give the lease up (False:
        it is kept, parked for a person or until a retry is due)."""
        ticket_id = journal.provider_booking_id
        if ticket_id is None:
            ceiling = self._fare_ceiling(booking.amount)

            async def record(order: str) -> None:
                await self._storage.note_fulfilment(booking.id, provider_order=order)

            try:
                ticket = await self._pay_order(
                    booking,
                    max_total=ceiling,
                    journal=OrderJournal(previous=journal.provider_order, record=record),
                )
            except FareIncreasedError as error:
                return await self._fare_rose(booking, error.total)
            except FareChangedError as error:
                # The held order's price moved between hold and payment (its hold is released).
                if error.price is not None and error.price > ceiling:
                    return await self._fare_rose(booking, error.price)
                log.warning("ticketing failed for %s: %s", booking.reference, error)
                await self._ticketing_failed(booking)
                return True
            except ProviderUnavailableError as error:
                if await self._once(f"ticketing-unavailable:{booking.id}", booking.id):
                    await self._alert(texts.alert_ticketing_unavailable(booking, str(error)))
                    await self._tell(
                        booking.user_id, texts.payment_received_ticket_pending(booking)
                    )
                return False  # reconciliation tries again once the lease runs out
            except ProviderError as error:
                log.warning("ticketing failed for %s: %s", booking.reference, error)
                await self._ticketing_failed(booking)
                return True
            except Exception as error:
                if await self._once(f"fulfilment-crashed:{booking.id}", booking.id):
                    await self._alert(texts.alert_fulfilment_crashed(booking, repr(error)))
                raise
            if ticket.needs_manual_action:
                await self._record_ticket(booking, ticket)
                await self._park(booking.id)
                if await self._once(f"manual-ticketing:{booking.id}", booking.id):
                    if journal.provider_order:
                        alert = texts.alert_ticketing_in_doubt(booking, ticket.provider_booking_id)
                    else:
                        alert = texts.alert_manual_ticketing(booking, ticket.provider_booking_id)
                    await self._alert(alert)
                    await self._tell(
                        booking.user_id, texts.payment_received_ticket_pending(booking)
                    )
                return False
            ticket_id = ticket.provider_booking_id
            await self._storage.note_fulfilment(booking.id, provider_booking_id=ticket_id)
            booking = await self._record_ticket(booking, ticket)
            if ticket.total is not None and ticket.total > ceiling:
                await self._alert(texts.alert_bought_above_payment(booking, ticket.total))
        if await self._storage.transition(booking.id, S.PAID, S.CONFIRMED):
            metrics.payment("confirmed")
            log.info("booking %s confirmed (provider booking %s)", booking.reference, ticket_id)
            confirmed = await self._reload(booking)
            await self._tell(booking.user_id, texts.confirmation(confirmed))
            self._receipts.confirmed(confirmed)
        return True

    def _fare_ceiling(self, paid: Money) -> Money:
        """The most a ticket may cost for what the traveller paid: the setting's tolerance on
        top (in percent, rounded down to the minor unit)."""
        extra = int(Decimal(paid.amount) * self._fare_tolerance / 100)
        return Money(amount=paid.amount + extra, currency=paid.currency)

    async def _fare_rose(self, booking: Booking, total: Money) -> bool:
        """The provider's final total is above what was paid: nothing was bought. Refund, or
        keep the booking paid for an admin to decide (FARE_INCREASE_ACTION)."""
        log.warning("booking %s: fare rose to %s at ticketing", booking.reference, total)
        if self._fare_increase_action == "ask_admin":
            await self._park(booking.id)
            if await self._once(f"fare-rose:{booking.id}", booking.id):
                await self._alert(texts.alert_fare_rose(booking, total, refunded=None))
                await self._tell(booking.user_id, texts.payment_received_ticket_pending(booking))
            return False
        await self._release_order(booking)  # nobody will pay the held order at its new price
        refunded = await self._ticketing_failed(
            booking,
            refunded_text=texts.fare_rose_refunded,
            pending_text=texts.fare_rose_refund_pending,
        )
        if refunded is not None and await self._once(f"fare-rose:{booking.id}", booking.id):
            await self._alert(texts.alert_fare_rose(booking, total, refunded=refunded))
        return True

    async def _park(self, booking_id: str) -> None:
        """Keep the fulfilment lease for good: a person takes the booking from here
        (/ticketed or /refund), and reconciliation leaves it alone."""
        now = self._now()
        await self._storage.claim_fulfilment(
            booking_id, self._worker_id, now=now, until=now + PARKED
        )

    @asynccontextmanager
    async def _lease_renewed(self, booking_id: str) -> AsyncIterator[None]:
        """Renew the fulfilment lease while the body runs, so a slow provider call is never
        taken over by another worker (which could buy a second ticket)."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self._lease.total_seconds() / 3)
                now = self._now()
                try:
                    held = await self._storage.claim_fulfilment(
                        booking_id, self._worker_id, now=now, until=now + self._lease
                    )
                except Exception:  # a blip: the next renewal tries again, well in time
                    log.warning("could not renew the ticketing lease", exc_info=True)
                    continue
                if held is None:
                    log.warning("lost the ticketing lease of booking %s", booking_id)

        task = asyncio.create_task(renew(), name=f"lease:{booking_id}")
        try:
            yield
        finally:
            task.cancel()

    async def _ticketing_failed(
        self,
        booking: Booking,
        *,
        refunded_text: Callable[[Booking, Money], Message] = texts.ticketing_failed_refunded,
        pending_text: Callable[[Booking], Message] = texts.ticketing_failed_refund_pending,
    ) -> bool | None:
        """paid → failed → refunded, telling the traveller. Returns whether the refund went
        through (None: another caller had already moved the booking on)."""
        if not await self._storage.transition(booking.id, S.PAID, S.FAILED):
            return None
        metrics.payment("ticketing_failed")
        refund = await self._refund(
            booking, amount=None, reason="ticketing failed", key=f"refund:{booking.id}:ticketing"
        )
        if refund is None:
            await self._tell(booking.user_id, pending_text(booking))
            return False
        await self._storage.transition(booking.id, S.FAILED, S.REFUNDED)
        await self._tell(booking.user_id, refunded_text(booking, refund.amount))
        self._receipts.refunded(booking, refund.amount, full=True)
        return True

    # reconciliation --------------------------------------------------------------------------
    async def reconcile(self) -> int:
        """Finish payments whose event was lost or whose worker died: paid bookings nobody has
        ticketed for ``stuck_after`` are ticketed (or refunded), and recently expired bookings
        whose session was paid after all are applied. Safe on every worker at once (the
        fulfilment lease and the status transitions decide). Returns how many it settled."""
        settled = 0
        now = self._now()
        for booking in await self._storage.list_stuck_paid(
            now - self._stuck_after, limit=OVERDUE_BATCH
        ):
            try:
                attempted = await self._fulfil(booking)
            except Exception:  # one booking's trouble must not stop the others
                log.warning("reconciling %s failed", booking.reference, exc_info=True)
                continue
            # Counted by the worker that settled it, not by one that found it settled.
            if attempted and (await self._reload(booking)).status is not S.PAID:
                settled += 1
        expired = await self._storage.list_expired_between(
            now - EXPIRED_LOOKBACK, now, limit=OVERDUE_BATCH
        )
        for booking in expired:
            try:
                if await self._settle_expired(booking):
                    settled += 1
            except Exception:
                log.warning("reconciling %s failed", booking.reference, exc_info=True)
        return settled + await self.resolve_refund_claims() + await self.retry_owed_refunds()

    async def retry_owed_refunds(self) -> int:
        """Bookings whose ticket was never issued owe the whole fare back; when that refund
        failed (Stripe down), the booking stayed ``failed`` with the money held, the traveller
        promised it. Tried again here, no sooner than ``stuck_after`` after the last attempt
        (each claim touches the booking), until it goes back; the admins heard of the first
        failure. Returns how many were refunded."""
        refunded = 0
        before = self._now() - self._stuck_after
        for booking in await self._storage.list_bookings_by_status(S.FAILED):
            if (
                booking.payment_intent_id is None
                or booking.refundable.amount <= 0
                or booking.updated_at > before
            ):
                continue
            try:
                refund = await self._send_refund(
                    booking,
                    amount=None,
                    reason="ticketing failed",
                    key=f"refund:{booking.id}:ticketing",
                )
            except AlreadyRefundedError:
                continue  # another worker is sending it right now
            except PaymentError as error:
                log.info("owed refund for %s not sent yet: %s", booking.reference, error)
                continue
            if await self._storage.transition(booking.id, S.FAILED, S.REFUNDED):
                refunded += 1
                await self._tell(booking.user_id, texts.owed_refund_sent(booking, refund.amount))
                self._receipts.refunded(booking, refund.amount, full=True)
        return refunded

    async def resolve_refund_claims(self) -> int:
        """End refund claims that nobody settled for ``REFUND_CLAIM_STALE`` (their worker
        stopped mid-refund, or Stripe never said whether it made one) with what Stripe says
        went back: the money is then refundable again, or counted as refunded and the
        traveller told. Returns how many claims it ended."""
        ended = 0
        stale = await self._storage.list_stale_refund_claims(
            self._now() - REFUND_CLAIM_STALE, limit=OVERDUE_BATCH
        )
        for booking in stale:
            try:
                if await self._resolve_refund_claim(booking):
                    ended += 1
            except Exception:
                log.warning("resolving %s's refund claim failed", booking.reference, exc_info=True)
        return ended

    async def _resolve_refund_claim(self, booking: Booking) -> bool:
        if booking.payment_intent_id is None:
            return False
        currency = booking.amount.currency
        total = (await self._gateway.refunded_total(booking.payment_intent_id, currency)).amount
        # What went back for this claim: nothing below what was already counted, nothing above
        # what was claimed (a refund made elsewhere reaches us as charge.refunded).
        claimed_to = booking.refunded_minor + booking.refund_pending_minor
        refunded = min(max(total, booking.refunded_minor), claimed_to)
        if not await self._storage.resolve_refund_claim(
            booking.id,
            expected_refunded=booking.refunded_minor,
            expected_pending=booking.refund_pending_minor,
            refunded=refunded,
        ):
            return False  # settled meanwhile, by its own worker or another sweeper
        current = await self._reload(booking)
        made = refunded - booking.refunded_minor
        log.info(
            "booking %s: a stale refund claim of %d ended, %d of it refunded",
            booking.reference,
            booking.refund_pending_minor,
            made,
        )
        if made > 0:
            full = current.refunded_minor >= current.amount.amount
            if full:
                await self._end_refunded(booking)
                current = await self._reload(booking)
            amount = Money(amount=made, currency=currency)
            await self._tell(current.user_id, texts.refund_issued(current, amount, full=full))
            self._receipts.refunded(current, amount, full=full)
        if refunded < claimed_to:
            released = Money(amount=claimed_to - refunded, currency=currency)
            await self._alert(texts.alert_refund_claim_released(current, released))
        return True

    async def _settle_expired(self, booking: Booking) -> bool:
        """Ask the gateway once about an expired booking's last session."""
        session_id = booking.checkout_session_id
        if session_id is None or await self._noted(booking.id, f"settled:{session_id}"):
            return False
        session = await self._current_session(booking)
        if session is None:
            return False
        if session.payment_status == "paid":
            await self._apply_payment(booking, session)
            return (await self._reload(booking)).status is not S.EXPIRED
        if session.status != "open":  # closed unpaid: never ask about it again
            await self._once(f"settled:{session_id}", booking.id)
        return False

    async def _once(self, key: str, booking_id: str | None) -> bool:
        """True for the first caller only, across workers: the ledger row is the memory."""
        return await self._storage.record_payment_event(
            f"{NOTICE_PREFIX}{key}", f"notice.{key.split(':', 1)[0]}", booking_id
        )

    async def _noted(self, booking_id: str, key: str) -> bool:
        wanted = f"{NOTICE_PREFIX}{key}"
        events = await self._storage.list_payment_events(booking_id)
        return any(event_id == wanted for event_id, _, _ in events)

    async def _on_expired(self, booking: Booking, event: PaymentEvent) -> None:
        session = event.session
        if session is None or session.id != booking.checkout_session_id:
            return  # an older link of a booking that has a newer one
        if booking.status is not S.AWAITING_PAYMENT:
            return
        try:
            # Late or reordered deliveries: what the session is now decides, not this copy.
            session = await self._gateway.retrieve_checkout(session.id)
        except PaymentError as error:
            log.info("booking %s: expiry taken from the event (%s)", booking.reference, error)
        if session.payment_status == "paid":
            await self._apply_payment(booking, session)
            return
        if session.status == "open":
            return
        if await self._storage.transition(booking.id, S.AWAITING_PAYMENT, S.EXPIRED):
            log.info("booking %s: payment link expired", booking.reference)
            metrics.payment("expired")
            await self._tell(booking.user_id, texts.link_expired(booking))

    async def _on_async_failed(self, booking: Booking, event: PaymentEvent) -> None:
        session = event.session
        if session is None or session.id != booking.checkout_session_id:
            return
        current = await self._reload(booking)
        if current.status in (S.AWAITING_PAYMENT, S.EXPIRED) and await self._once(
            f"payment-failed:{event.id}", booking.id
        ):
            await self._tell(current.user_id, texts.payment_failed(current))

    async def _on_charge_refunded(self, booking: Booking, event: PaymentEvent) -> None:
        if event.data.get("refunded") is not True:
            return  # partial: the booking stands
        current = await self._reload(booking)
        if event.payment_intent and current.payment_intent_id not in (None, event.payment_intent):
            return  # another payment of the booking (a duplicate, another amount) went back
        if await self._end_refunded(booking):
            return
        current = await self._reload(booking)
        if current.status.booked:
            await self._alert(texts.alert_refunded_outside(current))

    # after payment ---------------------------------------------------------------------------
    async def cancel_by_user(self, user_id: int, reference: str) -> Cancellation:
        """Cancel a confirmed booking before departure and refund what the airline gives back
        (``cancellation_refund``). The traveller pressed for it, so the chat's answer tells
        them; no notification besides."""
        booking = await self.get(user_id, reference)
        async with self._booking_locks.hold(booking.id):
            booking = await self._reload(booking)
            refusal = cancellation_refusal(booking, self._now())
            if refusal is not None:
                raise refusal
            airline_refund = await self._cancel_with_provider(booking)
            if not await self._storage.transition(booking.id, S.CONFIRMED, S.CANCELLED):
                raise CancellationRefusedError(texts.cannot_cancel(await self._reload(booking)))
            if airline_refund is not None and airline_refund.amount == 0:
                log.info("booking %s cancelled with nothing to refund", booking.reference)
                return Cancellation(await self._reload(booking), airline_refund)
            try:
                # What is left (or what the airline gives back): an admin's partial refund may
                # be on its way at this moment.
                refund = await self._send_refund(
                    booking,
                    amount=_part_or_all(booking, cancellation_refund(booking, airline_refund)),
                    reason="requested_by_customer",
                    key=f"refund:{booking.id}:cancel",
                )
            except AlreadyRefundedError:
                # An admin's full refund got there first (on another worker).
                raise CancellationRefusedError(
                    texts.cannot_cancel(await self._reload(booking))
                ) from None
            except PaymentError as error:
                log.warning("refund for %s failed: %s", booking.reference, error)
                current = await self._reload(booking)
                await self._alert(texts.alert_refund_failed(current, str(error)))
                raise RefundFailedError(texts.refund_failed_user(booking)) from None
            await self._storage.transition(booking.id, S.CANCELLED, S.REFUNDED)
            log.info("booking %s cancelled by the traveller and refunded", booking.reference)
            self._receipts.refunded(booking, refund.amount, full=True)
            return Cancellation(await self._reload(booking), refund.amount)

    async def mark_ticketed(self, reference: str) -> Booking:
        """An admin issued the ticket by hand after a manual-ticketing alert: the booking is
        confirmed and the traveller gets the confirmation their "ticket pending" message
        promised. Raises ``BookingError`` when the booking is not paid and waiting."""
        booking = await self.get(None, reference)
        if not await self._storage.transition(booking.id, S.PAID, S.CONFIRMED):
            current = await self._reload(booking)
            raise BookingError(
                f"Booking {current.reference} is not waiting for a ticket "
                f"(status: {current.status.label})."
            )
        confirmed = await self._reload(booking)
        log.info("booking %s confirmed by hand", confirmed.reference)
        await self._tell(confirmed.user_id, texts.confirmation(confirmed))
        self._receipts.confirmed(confirmed)
        return confirmed

    async def refund_by_admin(
        self, reference: str, *, amount: Money | None, reason: str | None, admin_id: int
    ) -> Booking:
        """Refund a booking whose money we hold, in full (``amount`` None or the whole amount:
        the booking ends ``refunded``) or in part (it stays as it is). The traveller is told
        once; the admin's action is audited. Raises ``NothingToRefundError`` with the reason."""
        booking = await self.get(None, reference)
        async with self._booking_locks.hold(booking.id):
            booking = await self._reload(booking)
            refusal = refund_refusal(booking, amount)
            if refusal is not None:
                raise refusal
            left = booking.refundable
            wanted = left if amount is None else amount
            if booking.status is S.CONFIRMED and wanted == booking.amount:
                wanted = await self._admin_cancel_with_provider(booking, amount)
                booking = await self._reload(booking)
                refusal = refund_refusal(booking, wanted)  # what the airline gives back
                if refusal is not None:
                    raise refusal
            # Refunding all that is left ends the booking; less leaves it as it is.
            full = wanted == left
            if full and not await self._claim_full_refund(booking):
                current = await self._reload(booking)
                if current.status in (S.CANCELLED, S.REFUNDED):  # the traveller cancelled
                    raise AlreadyRefundedError(texts.already_refunded(current))
                raise NothingToRefundError(texts.nothing_to_refund(current))
            try:
                refund = await self._send_refund(
                    booking,
                    amount=wanted,
                    reason=reason or "requested_by_customer",
                    key=f"refund:{booking.id}:admin",
                )
            except RefundUnconfirmedError as error:
                raise RefundFailedError(
                    f"The refund for {booking.reference} is unconfirmed: {error}. Its amount "
                    "stays held so it cannot go out twice; check the payment in Stripe."
                ) from None
            except PaymentError as error:
                status = (await self._reload(booking)).status.value
                raise RefundFailedError(
                    f"The refund for {booking.reference} failed: {error} "
                    f"(status now {status}; you can run the refund again)."
                ) from None
            if full:
                await self._end_refunded(booking)
            await self._storage.append_audit(
                AuditEntry(
                    admin_id=admin_id,
                    action="refund",
                    target=booking.reference,
                    details={
                        "amount": refund.amount.amount,
                        "currency": refund.amount.currency,
                        "full": full,
                        "reason": reason or "",
                        "refund_id": refund.id,
                    },
                )
            )
            updated = await self._reload(booking)
            await self._tell(
                updated.user_id, texts.refund_issued(updated, refund.amount, full=full)
            )
            self._receipts.refunded(updated, refund.amount, full=full)
            return updated

    async def _end_refunded(self, booking: Booking) -> bool:
        """A full refund went back: the booking moves to refunded from whichever status a full
        refund leaves from. False when it is in none of them (already refunded, or still on)."""
        for expected in REFUND_FROM_STATUSES:
            if await self._storage.transition(booking.id, expected, S.REFUNDED):
                log.info("booking %s refunded (from %s)", booking.reference, expected)
                return True
        return False

    async def _claim_full_refund(self, booking: Booking) -> bool:
        """Move the booking to the status a full refund leaves from (cancelled or failed)."""
        if booking.status in REFUND_FROM_STATUSES:
            return True
        if booking.status is S.CONFIRMED:
            return await self._storage.transition(booking.id, S.CONFIRMED, S.CANCELLED)
        # paid but never ticketed: the booking did not happen, like a ticketing failure
        return await self._storage.transition(booking.id, S.PAID, S.FAILED)

    async def _refund(
        self, booking: Booking, *, amount: Money | None, reason: str, key: str
    ) -> Refund | None:
        """Refund; on failure alert the admins and return None (the status says what is left).
        None too when someone else (an admin, at the same moment) is refunding it already."""
        try:
            return await self._send_refund(booking, amount=amount, reason=reason, key=key)
        except AlreadyRefundedError:
            log.info("booking %s is being refunded by someone else", booking.reference)
            return None
        except PaymentError as error:
            log.warning("refund for %s failed: %s", booking.reference, error)
            await self._alert(texts.alert_refund_failed(await self._reload(booking), str(error)))
            return None

    async def _send_refund(
        self, booking: Booking, *, amount: Money | None, reason: str, key: str
    ) -> Refund:
        """Refund ``amount`` (None: all that is left) through the gateway, at most once.

        The money is first claimed on the booking in one conditional update, so refunds from
        any number of workers never add up to more than was paid; a claim that would is
        ``AlreadyRefundedError`` and reaches no gateway. Each claim is a new attempt with its
        own idempotency key (``key:attempt``): Stripe keeps an error answer under a key for
        24 h, so a retry after a failure must not reuse the failed attempt's key. A failed
        attempt releases its claim; the amount sent is always explicit, so the gateway
        refunds exactly what was claimed (and refuses what exceeds the charge).
        """
        current = await self._reload(booking)
        if current.payment_intent_id is None:
            raise PaymentError("no payment is recorded on the booking")
        wanted = current.refundable if amount is None else amount
        attempt = await self._storage.reserve_refund(booking.id, wanted.amount)
        if attempt is None:
            raise AlreadyRefundedError(texts.already_refunded(await self._reload(booking)))
        attempt_key = f"{key}:{attempt}"
        try:
            refund = await self._gateway.refund(
                current.payment_intent_id,
                amount=wanted,
                reason=reason,
                idempotency_key=attempt_key,
            )
        except PaymentUnavailableError:
            refund = await self._refund_made_after_all(current, wanted, attempt_key)
        except PaymentError:
            # Refused: nothing was sent, so the money is claimable again. A worker that dies
            # here leaves the claim pending: nobody can refund that money twice meanwhile.
            await self._storage.settle_refund(booking.id, wanted.amount, sent=False)
            raise
        await self._storage.settle_refund(booking.id, wanted.amount, sent=True)
        await self._storage.record_payment_event(refund.id, REFUND_RECORD_TYPE, booking.id)
        log.info("booking %s refunded %s (%s)", booking.reference, refund.amount, refund.id)
        metrics.payment("refunded")
        return refund

    async def _refund_made_after_all(self, booking: Booking, wanted: Money, key: str) -> Refund:
        """No answer to a refund does not mean no refund: Stripe may have made it and the
        answer been lost. Releasing the claim then would let the next attempt, under a new
        key, send the money back twice, so Stripe is asked first. Raises when it was not made
        (the claim released) or when that cannot be known now (the claim kept)."""
        assert booking.payment_intent_id is not None
        try:
            found = await self._gateway.find_refund(booking.payment_intent_id, key)
        except PaymentError as error:
            log.warning("refund for %s: no answer, and no way to check yet", booking.reference)
            await self._alert(texts.alert_refund_unconfirmed(booking, wanted, key))
            raise RefundUnconfirmedError(
                f"Stripe did not answer, so whether {wanted.format()} went back is not known "
                f"yet ({error})"
            ) from None
        if found is None:
            await self._storage.settle_refund(booking.id, wanted.amount, sent=False)
            raise PaymentUnavailableError("Stripe did not answer; no refund was made")
        log.info("booking %s: a refund whose answer was lost was made", booking.reference)
        return found

    # the provider's order: hold before the charge, pay after it, cancel with the airline ----
    async def _hold_order(self, booking: Booking, deadline: datetime) -> tuple[Booking, datetime]:
        """Create the provider's order before the traveller is charged, and bound the payment
        link by what the airline holds: the hold's ``payment_required_by``, or, for a fare that
        cannot be held, the offer's own expiry. Raises ``BookingError`` with what to tell the
        traveller when the fare cannot be had at the booking's amount."""
        try:
            held = await self._provider.hold(booking)
        except FareUnavailableError:
            raise BookingError(texts.fare_gone_at_pay(booking)) from None
        except FareChangedError as error:
            raise BookingError(texts.fare_changed_at_pay(booking, error.price)) from None
        except ProviderUnavailableError:
            raise BookingError(texts.hold_unavailable(booking)) from None
        except ProviderError as error:
            log.warning("booking %s: the provider refused the hold: %s", booking.reference, error)
            raise BookingError(texts.hold_refused(booking, str(error))) from None
        fare_until = booking.itinerary.fare_expires_at
        if held is not None:
            booking = await self._storage.attach_provider_order(
                booking.id,
                order_id=held.order_id,
                token=held.token,
                airline_reference=held.airline_reference,
            )
            if held.price != booking.amount:
                await self._release_order(booking)
                raise BookingError(texts.fare_changed_at_pay(booking, held.price))
            fare_until = held.payment_required_by
            log.info("booking %s held as provider order %s", booking.reference, held.order_id)
        try:
            return booking, self._within_fare(booking, deadline, fare_until)
        except BookingError:
            await self._release_order(booking)
            raise

    def _within_fare(
        self, booking: Booking, deadline: datetime, until: datetime | None
    ) -> datetime:
        if until is None:
            return deadline
        if until - self._now() < MIN_FARE_TIME_LEFT:
            raise BookingError(texts.fare_hold_too_short(booking, until))
        return min(deadline, until - FARE_HOLD_SLACK)

    async def _check_held_fare(self, booking: Booking) -> datetime:
        """Before a new link: the held order (or, without one, the offer) is still to be had at
        the booking's amount; returns the new link's deadline."""
        deadline = self._now() + self._payment_window
        if not booking.provider_order_id:
            await self._check_fare(booking)
            return self._within_fare(booking, deadline, booking.itinerary.fare_expires_at)
        try:
            held = await self._provider.check_hold(booking)
        except FareUnavailableError:
            raise RenewalRefusedError(texts.fare_gone(booking)) from None
        except FareChangedError as error:
            if error.price is None:
                raise RenewalRefusedError(texts.fare_gone(booking)) from None
            raise RenewalRefusedError(texts.fare_changed(booking, error.price)) from None
        until = held.payment_required_by if held is not None else None
        try:
            return self._within_fare(booking, deadline, until)
        except BookingError as error:
            raise RenewalRefusedError(str(error)) from None

    async def _release_order(self, booking: Booking) -> None:
        """Give the seats of an unpaid hold back; failures only cost the airline's timer."""
        if not booking.provider_order_id:
            return
        try:
            await self._provider.release(booking)
        except ProviderError as error:
            log.info("booking %s: hold not released: %s", booking.reference, error)

    async def _pay_order(
        self, booking: Booking, *, max_total: Money, journal: OrderJournal
    ) -> Ticket:
        """Pay the provider's order now that the money is taken (or buy it at once when the
        fare could not be held). A hold that can no longer be paid at the price is released."""
        try:
            return await self._provider.ticket(booking, max_total=max_total, journal=journal)
        except (FareChangedError, FareUnavailableError):
            await self._release_order(booking)
            raise

    async def _record_ticket(self, booking: Booking, ticket: Ticket) -> Booking:
        """Keep the provider's order id, the airline's reference and the e-tickets on the
        booking, for the confirmation, /mybookings and the admins."""
        if not (ticket.provider_booking_id or ticket.airline_reference or ticket.ticket_numbers):
            return booking
        try:
            return await self._storage.attach_provider_order(
                booking.id,
                order_id=None
                if booking.provider_order_id or not ticket.provider_booking_id
                else ticket.provider_booking_id,
                airline_reference=ticket.airline_reference,
                ticket_numbers=ticket.ticket_numbers or None,
            )
        except ValueError:
            log.warning("booking %s: provider order already on another booking", booking.reference)
            return booking

    async def cancellation_preview(self, user_id: int, reference: str) -> Money:
        """What cancelling would refund (``cancellation_refund``), asked of the airline before
        the traveller confirms. Raises ``CancellationRefusedError`` when the booking cannot be
        cancelled or the airline does not answer."""
        booking = await self.get(user_id, reference)
        refusal = cancellation_refusal(booking, self._now())
        if refusal is not None:
            raise refusal
        try:
            quote = await self._provider.quote_cancellation(booking)
        except ProviderUnavailableError:
            raise CancellationRefusedError(texts.airline_unreachable(booking)) from None
        except ProviderError as error:
            log.warning("booking %s: no cancellation quote: %s", booking.reference, error)
            raise CancellationRefusedError(texts.airline_refused_cancel(booking)) from None
        return cancellation_refund(booking, None if quote is None else quote.refund)

    async def _cancel_with_provider(self, booking: Booking) -> Money | None:
        """Cancel the ticketed order with the airline; returns what the airline refunds (in the
        booking's currency), or None when there is no airline order (refund in full)."""
        try:
            quote = await self._provider.quote_cancellation(booking)
            if quote is None:
                return None
            refunded = await self._provider.confirm_cancellation(booking, quote)
        except ProviderUnavailableError:
            raise CancellationRefusedError(texts.airline_unreachable(booking)) from None
        except ProviderError as error:
            log.warning("booking %s: airline cancellation failed: %s", booking.reference, error)
            await self._alert(texts.alert_airline_cancel_failed(booking, str(error)))
            raise CancellationRefusedError(texts.airline_refused_cancel(booking)) from None
        log.info("booking %s cancelled with the airline, refund %s", booking.reference, refunded)
        return refunded if refunded <= booking.amount else booking.amount

    async def _admin_cancel_with_provider(self, booking: Booking, amount: Money | None) -> Money:
        """An admin's full refund of a confirmed booking cancels the airline order first; with
        no amount given, the refund is what the airline refunds."""
        try:
            airline_refund = await self._cancel_with_provider(booking)
        except CancellationRefusedError as error:
            raise NothingToRefundError(str(error)) from None
        if airline_refund is None:
            return booking.amount if amount is None else amount
        await self._storage.transition(booking.id, S.CONFIRMED, S.CANCELLED)
        if amount is not None:
            return amount
        if airline_refund.amount == 0:
            raise NothingToRefundError(texts.airline_refunds_nothing(booking))
        return airline_refund

    async def handle_provider_event(self, event: ProviderEvent) -> None:
        """Apply one verified provider notification (schedule change, airline cancellation),
        once per event id; it is kept in the booking's history for /booking REF."""
        booking = await self._storage.get_booking_by_provider_order(event.order_id)
        if booking is None:
            log.info("provider event %s is for no booking of ours", event.id)
            return
        event_id = f"{self._provider.name}:{event.id}"
        async with self._booking_locks.hold(booking.id):
            booking = await self._reload(booking)
            # As for Stripe's events: applied only once its effects are done, so a delivery
            # that failed half way (a refund Stripe refused, a crash) is finished by the next.
            if not await self._storage.receive_payment_event(event_id, event.type, booking.id):
                log.info("provider event %s already handled", event.id)
                return
            if event.kind == "schedule_changed":
                await self._tell(booking.user_id, texts.schedule_changed(booking, event.summary))
                await self._alert(texts.alert_schedule_changed(booking))
            elif event.kind == "airline_cancelled":
                await self._on_airline_cancelled(booking, event)
            elif event.kind == "order_cancelled" and booking.status is S.CONFIRMED:
                await self._alert(texts.alert_order_cancelled_at_provider(booking))
            elif event.kind == "ticketed" and booking.status is S.PAID:
                await self._alert(texts.alert_provider_ticketed(booking))
            await self._storage.mark_payment_event_applied(event_id)

    async def _on_airline_cancelled(self, booking: Booking, event: ProviderEvent) -> None:
        """The airline cancelled the flight: the traveller is owed the whole fare back.

        The intent is noted before the booking moves, so a delivery that stopped between the
        move and the refund is finished by the next one instead of leaving the money held."""
        marker = f"airline-cancelled:{booking.id}"
        if booking.status is S.CONFIRMED:
            await self._once(marker, booking.id)
        if not await self._storage.transition(booking.id, S.CONFIRMED, S.CANCELLED):
            current = await self._reload(booking)
            if current.status is S.PAID:
                await self._alert(texts.alert_airline_cancelled(current, refunded=False))
            if current.status is not S.CANCELLED or not await self._noted(booking.id, marker):
                return
            booking = current
        try:
            refund = await self._send_refund(
                booking, amount=None, reason="airline cancelled", key=f"refund:{booking.id}:airline"
            )
        except AlreadyRefundedError:
            log.info("booking %s is being refunded by someone else", booking.reference)
            return
        except PaymentError as error:
            # Raised, so the event stays unapplied and the provider's next delivery refunds:
            # swallowed, the fare stayed with us. Traveller and admins hear of it once.
            log.warning("airline-cancelled %s not refunded yet: %s", booking.reference, error)
            if await self._once(f"airline-refund-failed:{booking.id}", booking.id):
                await self._tell(booking.user_id, texts.airline_cancelled(booking, None))
                await self._alert(texts.alert_refund_failed(booking, str(error)))
            raise
        await self._storage.transition(booking.id, S.CANCELLED, S.REFUNDED)
        await self._tell(booking.user_id, texts.airline_cancelled(booking, refund.amount))
        await self._alert(texts.alert_airline_cancelled(booking, refunded=True))

    # plumbing --------------------------------------------------------------------------------
    async def _reload(self, booking: Booking) -> Booking:
        fresh = await self._storage.get_booking(booking.id)
        return fresh if fresh is not None else booking

    async def _tell(self, user_id: int, message: Message) -> bool:
        """Send a message to the traveller; a failure is logged, never undoes the booking."""
        try:
            return await self._notifier.notify(user_id, message)
        except Exception:  # whatever the transport raises: the booking stands regardless
            log.exception("could not notify user %s", user_id)
            return False

    async def _alert(self, text: str) -> None:
        log.warning("admin alert: %s", text)
        if self._alert_admins is None:
            return
        try:
            await self._alert_admins(text)
        except Exception:  # alerting must never break the booking flow
            log.exception("could not alert the admins")


def _part_or_all(booking: Booking, refund: Money) -> Money | None:
    """The amount to send through the gateway: None for all that is left (re-read when it is
    claimed, so an admin's partial refund meanwhile is not given twice), else ``refund``."""
    return None if refund == booking.refundable else refund
