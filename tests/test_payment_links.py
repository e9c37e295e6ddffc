"""Payment links are capped: a traveller has at most a few open at once, and one booking gets
only so many new links, whatever old buttons are pressed how often. Each refusal says what to
do instead. The booking service with the Stripe stand-in, on SQLite and on the Supabase stack;
what Pay says in the chat then is tested at the engine seam (tests/test_seam_booking.py)."""

from __future__ import annotations

import pytest

from services.bookings import (
    MAX_OPEN_LINKS_PER_USER,
    MAX_RENEWALS_PER_BOOKING,
    BookingError,
    RenewalRefusedError,
)
from services.models import BookingStatus, Itinerary
from services.payments.base import PaymentError
from tests.test_bookings import (  # noqa: F401 - fixtures
    USER,
    World,
    demo_itineraries,
    itinerary,
    places,
    stripe_api,
    traveller,
    world,
)

S = BookingStatus


def offers(itinerary: Itinerary, count: int) -> list[Itinerary]:  # noqa: F811
    return [itinerary.model_copy(update={"id": f"{itinerary.id}-{n}"}) for n in range(count)]


async def test_a_traveller_has_at_most_three_open_payment_links(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    assert MAX_OPEN_LINKS_PER_USER == 3
    first, *others, extra = offers(itinerary, MAX_OPEN_LINKS_PER_USER + 1)
    opened = [
        await world.service.start_checkout(USER, offer, (traveller(),))
        for offer in (first, *others)
    ]

    with pytest.raises(BookingError) as refused:
        await world.service.start_checkout(USER, extra, (traveller(),))
    assert str(refused.value) == (
        "You already have 3 bookings waiting for payment. Pay for one of them, or cancel "
        "one in /mybookings, then tap Pay again."
    )
    assert len(world.stripe.sessions) == MAX_OPEN_LINKS_PER_USER

    again, _ = await world.service.start_checkout(USER, first, (traveller(),))
    assert again.id == opened[0][0].id  # the same booking's link is still sent again
    assert await world.service.abandon(USER, opened[1][0].reference)
    booking, _ = await world.service.start_checkout(USER, extra, (traveller(),))
    assert booking.status is S.AWAITING_PAYMENT


async def test_one_booking_gets_only_so_many_new_links(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    assert MAX_RENEWALS_PER_BOOKING == 5
    booking, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    for _ in range(MAX_RENEWALS_PER_BOOKING):
        await world.stripe.deliver(world.webhook, world.stripe.expire_session(session.id))
        booking, session = await world.service.renew_checkout(USER, booking.reference)
    await world.stripe.deliver(world.webhook, world.stripe.expire_session(session.id))

    with pytest.raises(RenewalRefusedError) as refused:
        await world.service.renew_checkout(USER, booking.reference)

    assert str(refused.value) == (
        f"Booking {booking.reference} has had {MAX_RENEWALS_PER_BOOKING + 1} payment links "
        "already, so I won't make another. /start to search again and book afresh."
    )
    assert len(world.stripe.sessions) == MAX_RENEWALS_PER_BOOKING + 1
    # a link that is still good is sent again: that makes no new session and counts nothing
    other, link = await world.service.start_checkout(
        USER, itinerary.model_copy(update={"id": "other"}), (traveller(),)
    )
    for _ in range(10):
        assert (await world.service.renew_checkout(USER, other.reference))[1].id == link.id


async def test_renewing_counts_against_the_open_links(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    lapsed, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    await world.stripe.deliver(world.webhook, world.stripe.expire_session(session.id))
    for offer in offers(itinerary, MAX_OPEN_LINKS_PER_USER):
        await world.service.start_checkout(USER, offer, (traveller(),))

    with pytest.raises(RenewalRefusedError, match="already have 3 bookings waiting"):
        await world.service.renew_checkout(USER, lapsed.reference)


async def test_a_new_link_stripe_failed_to_make_can_be_asked_for_again(
    world: World,  # noqa: F811
    itinerary: Itinerary,  # noqa: F811
) -> None:
    booking, session = await world.service.start_checkout(USER, itinerary, (traveller(),))
    await world.stripe.deliver(world.webhook, world.stripe.expire_session(session.id))
    world.stripe.fail_next("/v1/checkout/sessions")

    with pytest.raises(PaymentError):
        await world.service.renew_checkout(USER, booking.reference)
    _, fresh = await world.service.renew_checkout(USER, booking.reference)

    assert fresh.status == "open"
    keys = [r.idempotency_key for r in world.stripe.requests if r.path == "/v1/checkout/sessions"]
    assert len(keys) == len(set(keys)) == 3  # first link, the failed try, the retry
