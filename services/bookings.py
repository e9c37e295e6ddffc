"""The booking service: the one way a booking is created, paid, ticketed, cancelled or refunded.

Every status change is a conditional update in storage (``transition``), and whoever wins a
transition does what follows it (ticketing, the message to the traveller, the refund). So
duplicate, late and out-of-order payment events, and any number of concurrent workers, lead to
one outcome and one message: the status rules decide, never the arrival order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from pydantic import ValidationError

from services import metrics, texts
from services.flights.base import (
    FlightProvider,
    ProviderError,
    ProviderUnavailableError,
    Recheck,
)
from services.messages import Message
from services.models import (
    AuditEntry,
    Booking,
    BookingStatus,
    Itinerary,
    NewBooking,
    PassengerCategory,
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
REFUND_RECORD_TYPE = "refund.created"  # how our own refunds appear in a booking's event history


class BookingError(Exception):
    """A request about a booking that cannot be carried out. ``str()`` is plain text (escape it
    for HTML) that can be shown to the person who asked."""


class UnknownBookingError(BookingError):
    pass


class CancellationRefusedError(BookingError):
    pass


class RenewalRefusedError(BookingError):
    pass


class NothingToRefundError(BookingError):
    pass


class RefundFailedError(BookingError):
    """The booking was cancelled but the money could not be sent back yet; admins are alerted."""


# Bookings settled per sweep; the rest wait for the next minute.
OVERDUE_BATCH = 200


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


def passengers_of(travellers: tuple[Traveller, ...]) -> Passengers:
    """Who is travelling, counted by category (what the provider re-prices for)."""
    count = dict.fromkeys(PassengerCategory, 0)
    for traveller in travellers:
        count[traveller.category] += 1
    return Passengers(
        adults=count[PassengerCategory.ADULT],
        children=count[PassengerCategory.CHILD],
        infants=count[PassengerCategory.INFANT],
    )


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
    ) -> None:
        self._storage = storage
        self._provider = provider
        self._gateway = gateway
        self._notifier = notifier
        self._success_url = success_url
        self._cancel_url = cancel_url
        self._payment_window = payment_window
        self._alert_admins = alert_admins
        self._now = clock
        self._booking_locks = _KeyedLocks()
        self._user_locks = _KeyedLocks()

    @property
    def gateway(self) -> PaymentGateway:
        return self._gateway

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
            session = await self._gateway.create_checkout(
                booking,
                success_url=self._success_url(booking),
                cancel_url=self._cancel_url(booking),
                expires_at=deadline,
                idempotency_key=f"checkout:{booking.id}:1",
            )
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
            if booking.status not in (S.AWAITING_PAYMENT, S.EXPIRED, S.DRAFT):
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
                raise RenewalRefusedError(texts.already_paid(booking))
            await self._check_fare(booking)
            previous = booking.checkout_session_id or "none"
            session = await self._gateway.create_checkout(
                booking,
                success_url=self._success_url(booking),
                cancel_url=self._cancel_url(booking),
                expires_at=self._now() + self._payment_window,
                idempotency_key=f"checkout:{booking.id}:after:{previous}",
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
            passengers = passengers_of(booking.travellers)
        except ValidationError:
            raise RenewalRefusedError(texts.fare_gone(booking)) from None
        check = await self._provider.recheck(booking.itinerary, passengers)
        if not check.available:
            raise RenewalRefusedError(texts.fare_gone(booking))
        if check.price != booking.amount:
            raise RenewalRefusedError(texts.fare_changed(booking, check.price))

    async def abandon(self, user_id: int, reference: str) -> bool:
        """The traveller gives up on paying: awaiting_payment → expired, and the link is closed.

        Returns whether there was a payable booking to abandon. A payment that completed at
        that very moment still confirms the booking when its event arrives.
        """
        booking = await self.get(user_id, reference)
        async with self._booking_locks.hold(booking.id):
            booking = await self._reload(booking)
            abandoned = False
            if booking.status is S.AWAITING_PAYMENT:
                abandoned = await self._storage.transition(
                    booking.id, S.AWAITING_PAYMENT, S.EXPIRED
                )
            elif booking.status is S.EXPIRED and booking.checkout_session_id:
                current = await self._current_session(booking)
                abandoned = current is not None and current.status == "open"
            if abandoned and booking.checkout_session_id:
                try:
                    await self._gateway.expire_checkout(booking.checkout_session_id)
                except PaymentError as error:
                    log.info("could not close the link of %s: %s", booking.reference, error)
            return abandoned

    async def expire_overdue(self) -> int:
        """Settle bookings whose payment deadline passed without an event (a missed webhook, or
        the sandbox, which has no timer): paid sessions are fulfilled, the rest expire and the
        traveller is told. Returns how many expired. Safe to run from several workers."""
        expired = 0
        now = self._now()
        for booking in await self._storage.list_overdue(now, limit=OVERDUE_BATCH):
            session = await self._current_session(booking)
            if session is not None and session.payment_status == "paid":
                await self._apply_payment(booking, session)
                continue
            if session is not None and session.status == "open":
                continue  # the gateway still takes payment; its own expiry event will come
            if await self._storage.transition(booking.id, S.AWAITING_PAYMENT, S.EXPIRED):
                metrics.payment("expired")
                expired += 1
                await self._tell(booking.user_id, texts.link_expired(booking))
        return expired

    # payment events --------------------------------------------------------------------------
    async def handle_event(self, event: PaymentEvent) -> None:
        """Apply one verified gateway event, at most once per event id."""
        booking = await self._booking_for_event(event)
        first = await self._storage.record_payment_event(
            event.id, event.type, booking.id if booking else None
        )
        if not first:
            log.info("event %s (%s) already handled", event.id, event.type)
            return
        if booking is None:
            log.warning("event %s (%s) is for no booking of ours", event.id, event.type)
            return
        if event.type in (CHECKOUT_COMPLETED, ASYNC_PAYMENT_SUCCEEDED):
            await self._on_payment_event(booking, event)
        elif event.type == CHECKOUT_EXPIRED:
            await self._on_expired(booking, event)
        elif event.type == ASYNC_PAYMENT_FAILED:
            await self._on_async_failed(booking, event)
        elif event.type == CHARGE_REFUNDED:
            await self._on_charge_refunded(booking, event)
        else:
            log.info("event %s (%s) needs nothing", event.id, event.type)

    async def _booking_for_event(self, event: PaymentEvent) -> Booking | None:
        booking_id = event_booking_id(event)
        if booking_id:
            booking = await self._storage.get_booking(booking_id)
            if booking is not None:
                return booking
        if event.session is not None:
            return await self._storage.get_booking_by_session(event.session.id)
        return None

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
        """Money was taken: paid (from awaiting or expired: money taken wins), then ticket."""
        if session.amount != booking.amount:
            await self._alert(texts.alert_amount_mismatch(booking, session.amount))
            return
        intent = session.payment_intent
        if booking.status is S.DRAFT:  # paid before its link was even recorded as sent
            await self._storage.transition(booking.id, S.DRAFT, S.AWAITING_PAYMENT)
        won = await self._storage.transition(
            booking.id, S.AWAITING_PAYMENT, S.PAID, payment_intent_id=intent
        ) or await self._storage.transition(booking.id, S.EXPIRED, S.PAID, payment_intent_id=intent)
        if not won:
            await self._maybe_duplicate_payment(booking, intent)
            return
        log.info("booking %s paid", booking.reference)
        metrics.payment("paid")
        await self._fulfil(await self._reload(booking))

    async def _maybe_duplicate_payment(self, booking: Booking, intent: str | None) -> None:
        """A second session of the same booking was paid too: give that money back."""
        current = await self._reload(booking)
        if intent is None or current.payment_intent_id in (None, intent):
            return
        refunded = False
        try:
            refund = await self._gateway.refund(
                intent,
                amount=None,
                reason="duplicate",
                idempotency_key=f"refund:duplicate:{intent}",
            )
            refunded = True
            await self._storage.record_payment_event(refund.id, REFUND_RECORD_TYPE, booking.id)
            await self._tell(
                current.user_id, texts.duplicate_payment_refunded(current, refund.amount)
            )
        except PaymentError as error:
            log.warning("duplicate payment on %s not refunded: %s", booking.reference, error)
        await self._alert(texts.alert_duplicate_payment(current, intent, refunded))

    async def _fulfil(self, booking: Booking) -> None:
        """Ticket a booking this worker just moved to paid."""
        try:
            ticket = await self._provider.ticket(booking)
        except ProviderUnavailableError as error:
            await self._alert(texts.alert_ticketing_unavailable(booking, str(error)))
            await self._tell(booking.user_id, texts.payment_received_ticket_pending(booking))
            return
        except ProviderError as error:
            log.warning("ticketing failed for %s: %s", booking.reference, error)
            await self._ticketing_failed(booking)
            return
        except Exception as error:
            await self._alert(texts.alert_fulfilment_crashed(booking, repr(error)))
            raise
        if ticket.needs_manual_action:
            await self._alert(texts.alert_manual_ticketing(booking, ticket.provider_booking_id))
            await self._tell(booking.user_id, texts.payment_received_ticket_pending(booking))
            return
        if await self._storage.transition(booking.id, S.PAID, S.CONFIRMED):
            metrics.payment("confirmed")
            log.info(
                "booking %s confirmed (provider booking %s)",
                booking.reference,
                ticket.provider_booking_id,
            )
            await self._tell(booking.user_id, texts.confirmation(await self._reload(booking)))

    async def _ticketing_failed(self, booking: Booking) -> None:
        if not await self._storage.transition(booking.id, S.PAID, S.FAILED):
            return
        metrics.payment("ticketing_failed")
        refund = await self._refund(
            booking, amount=None, reason="ticketing failed", key=f"refund:{booking.id}:ticketing"
        )
        if refund is None:
            await self._tell(booking.user_id, texts.ticketing_failed_refund_pending(booking))
            return
        await self._storage.transition(booking.id, S.FAILED, S.REFUNDED)
        await self._tell(booking.user_id, texts.ticketing_failed_refunded(booking, refund.amount))

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
        if current.status in (S.AWAITING_PAYMENT, S.EXPIRED):
            await self._tell(current.user_id, texts.payment_failed(current))

    async def _on_charge_refunded(self, booking: Booking, event: PaymentEvent) -> None:
        if event.data.get("refunded") is not True:
            return  # partial: the booking stands
        for expected in (S.CANCELLED, S.FAILED):
            if await self._storage.transition(booking.id, expected, S.REFUNDED):
                log.info("booking %s refunded (from %s)", booking.reference, expected)
                return
        current = await self._reload(booking)
        if current.status in (S.PAID, S.CONFIRMED):
            await self._alert(texts.alert_refunded_outside(current))

    # after payment ---------------------------------------------------------------------------
    async def cancel_by_user(self, user_id: int, reference: str) -> Booking:
        """Cancel a confirmed booking before departure and refund it in full."""
        booking = await self.get(user_id, reference)
        async with self._booking_locks.hold(booking.id):
            booking = await self._reload(booking)
            if booking.status is not S.CONFIRMED:
                raise CancellationRefusedError(texts.cannot_cancel(booking))
            if booking.itinerary.departure <= self._now():
                raise CancellationRefusedError(texts.already_departed(booking))
            if not await self._storage.transition(booking.id, S.CONFIRMED, S.CANCELLED):
                raise CancellationRefusedError(texts.cannot_cancel(await self._reload(booking)))
            refund = await self._refund(
                booking,
                amount=None,
                reason="requested_by_customer",
                key=f"refund:{booking.id}:cancel",
            )
            if refund is None:
                raise RefundFailedError(texts.refund_failed_user(booking))
            await self._storage.transition(booking.id, S.CANCELLED, S.REFUNDED)
            log.info("booking %s cancelled by the traveller and refunded", booking.reference)
            return await self._reload(booking)

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
            refundable = (S.PAID, S.CONFIRMED, S.FAILED, S.CANCELLED)
            if booking.status not in refundable or booking.payment_intent_id is None:
                raise NothingToRefundError(texts.nothing_to_refund(booking))
            wanted = booking.amount if amount is None else amount
            if wanted.currency != booking.amount.currency:
                raise NothingToRefundError(
                    f"Booking {booking.reference} was paid in {booking.amount.currency}, "
                    f"not {wanted.currency}."
                )
            if wanted.amount <= 0:
                raise NothingToRefundError("The refund amount must be more than zero.")
            if wanted > booking.amount:
                raise NothingToRefundError(texts.refund_too_large(booking, wanted))
            # A full refund ends the booking; the gateway refunds whatever is left of the
            # payment (earlier partial refunds included). A partial one leaves it as it is.
            full = wanted == booking.amount
            if full and not await self._claim_full_refund(booking):
                raise NothingToRefundError(texts.nothing_to_refund(await self._reload(booking)))
            count = len(await self._refund_records(booking))
            try:
                refund = await self._send_refund(
                    booking,
                    amount=None if full else wanted,
                    reason=reason or "requested_by_customer",
                    key=f"refund:{booking.id}:admin:{count + 1}:{wanted.amount}",
                )
            except PaymentError as error:
                status = (await self._reload(booking)).status.value
                raise RefundFailedError(
                    f"The refund for {booking.reference} failed: {error} "
                    f"(status now {status}; you can run the refund again)."
                ) from None
            if full:
                for expected in (S.CANCELLED, S.FAILED):
                    if await self._storage.transition(booking.id, expected, S.REFUNDED):
                        break
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
            return updated

    async def _claim_full_refund(self, booking: Booking) -> bool:
        """Move the booking to the status a full refund leaves from (cancelled or failed)."""
        if booking.status in (S.CANCELLED, S.FAILED):
            return True
        if booking.status is S.CONFIRMED:
            return await self._storage.transition(booking.id, S.CONFIRMED, S.CANCELLED)
        # paid but never ticketed: the booking did not happen, like a ticketing failure
        return await self._storage.transition(booking.id, S.PAID, S.FAILED)

    async def _refund_records(self, booking: Booking) -> list[str]:
        events = await self._storage.list_payment_events(booking.id)
        return [event_id for event_id, kind, _ in events if kind == REFUND_RECORD_TYPE]

    async def _refund(
        self, booking: Booking, *, amount: Money | None, reason: str, key: str
    ) -> Refund | None:
        """Refund; on failure alert the admins and return None (the status says what is left)."""
        try:
            return await self._send_refund(booking, amount=amount, reason=reason, key=key)
        except PaymentError as error:
            log.warning("refund for %s failed: %s", booking.reference, error)
            await self._alert(texts.alert_refund_failed(await self._reload(booking), str(error)))
            return None

    async def _send_refund(
        self, booking: Booking, *, amount: Money | None, reason: str, key: str
    ) -> Refund:
        """Refund through the gateway and record it in the booking's payment history."""
        current = await self._reload(booking)
        if current.payment_intent_id is None:
            raise PaymentError("no payment is recorded on the booking")
        refund = await self._gateway.refund(
            current.payment_intent_id, amount=amount, reason=reason, idempotency_key=key
        )
        await self._storage.record_payment_event(refund.id, REFUND_RECORD_TYPE, booking.id)
        log.info("booking %s refunded %s (%s)", booking.reference, refund.amount, refund.id)
        metrics.payment("refunded")
        return refund

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
