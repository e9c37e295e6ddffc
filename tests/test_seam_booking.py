"""The booking flow at the engine seam: traveller details, review, edit, pay, confirmation."""

from __future__ import annotations

import re

from services.bookings import MAX_OPEN_LINKS_PER_USER
from services.models import BookingStatus, Itinerary
from tests.support.flowkit import TRAVELLER_ID, Chat, SeamKit, to_field, to_payment, to_review
from tests.support.happy_path import (
    CONFIRMED,
    EMAIL,
    PASSPORT,
    PASSPORT_MASKED,
    TRAVELLER_MOVES,
)
from tests.test_admin_harness import traveller

USER = TRAVELLER_ID  # the traveller of the flowkit paths


async def test_the_happy_path_books_pays_and_confirms(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    review = await chat.play(seam.happy_path()[:-1])
    total = re.search(r"Total: €([\d,.]+)", review.text)
    assert total is not None
    link = await chat.press("Pay")
    assert any(b.url and "/checkout/sandbox/" in b.url for b in link.last.buttons)
    booking = await chat.booking()
    assert booking.status is BookingStatus.AWAITING_PAYMENT
    assert f"{booking.amount.amount / 100:,.2f}" == total.group(1)

    paid = await seam.pay(booking)
    assert paid.status is BookingStatus.CONFIRMED
    confirmation = chat.last.text
    assert CONFIRMED in confirmation
    assert booking.reference in confirmation
    assert PASSPORT not in confirmation
    # the calendar file follows the confirmation in the chat, the email is written out
    assert any(m.document == f"{booking.reference}.ics" for m in chat.messages)
    await seam.services.receipts.drain()
    assert list((seam.tmp_path / "outbox").glob("*.eml"))


async def test_paying_twice_confirms_once(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    booking = await seam.booked(chat)
    told = len(chat.notifications())
    again = await seam.bookings.booking_for_session(booking.checkout_session_id or "")
    assert again is not None
    assert again.status is BookingStatus.CONFIRMED
    assert len(chat.notifications()) == told


async def test_the_passport_is_shown_masked_at_review(seam: SeamKit) -> None:
    chat = await to_review(seam)
    assert PASSPORT_MASKED in chat.last.text
    assert PASSPORT not in chat.last.text


async def test_the_full_name_in_one_answer_is_shown_as_printed(seam: SeamKit) -> None:
    chat = await to_field(seam)
    reply = await chat.say("Ana Maria da Silva")
    assert "On the ticket: <b>DA SILVA/ANA MARIA</b>" in reply.html
    assert "Date of birth" in reply.text
    confirmed = await chat.press("✓ DA SILVA/ANA MARIA")
    assert "Name confirmed" in confirmed.toast
    assert (await chat.record()).data["booking"]["field"] == "birth_date"
    await chat.press("Swap first and last name")
    assert (await _values(chat))["first_name"] == "DA SILVA"
    await chat.press("Type them apart")
    await chat.say("Ana Maria")
    reply = await chat.say("da Silva")
    assert "Date of birth" in reply.text
    assert await _values(chat) == {"first_name": "ANA MARIA", "last_name": "DA SILVA"}


async def _values(chat: Chat) -> dict[str, object]:
    values: dict[str, object] = (await chat.record()).data["booking"]["travellers"][0]["values"]
    return values


async def test_gender_buttons_follow_the_date_of_birth(seam: SeamKit) -> None:
    chat = await to_field(seam)
    await chat.say("Ana Silva")
    reply = await chat.say("17.05.1990")
    assert "Born 17 May 1990" in reply.text
    assert {"Female", "Male"} <= set(reply.labels)
    reply = await chat.press("Female")
    assert "Nationality" in reply.text


async def test_a_birth_date_whose_day_and_month_could_swap_is_asked(seam: SeamKit) -> None:
    chat = await to_field(seam)
    await chat.say("Ana Silva")
    reply = await chat.say("12/08/1988")
    assert "Which date do you mean" in reply.text
    assert "birth_date" not in await _values(chat)
    await chat.press("8 Dec 1988")
    assert (await _values(chat))["birth_date"] == "1988-12-08"


async def test_a_nationality_not_understood_offers_close_countries(seam: SeamKit) -> None:
    chat = await to_field(seam)
    await chat.play(TRAVELLER_MOVES[:3])
    reply = await chat.say("Korea")
    assert "did you mean South Korea or North Korea?" in reply.text
    assert reply.state == "book:field"
    assert {"South Korea", "North Korea"} <= set(reply.labels)
    reply = await chat.press("South Korea")
    assert "Passport number" in reply.text


async def test_back_from_the_first_question_returns_to_the_results(seam: SeamKit) -> None:
    chat = await to_field(seam)
    reply = await chat.press("‹ Back to results")
    assert reply.state == "search:results"
    assert (await chat.record()).data["booking"] is None


async def test_prices_are_explained_before_pay(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    await chat.say("/start")
    results = await chat.say(f"LIS-FCO {seam.day(60).isoformat()} 2 adults 1 child")
    assert "Prices are the total for 2 adults, 1 child, taxes included." in results.text
    await chat.press("1")
    await chat.play(TRAVELLER_MOVES[:-1])
    await chat.press("Skip")
    people = [
        ("Joao Silva", "22.11.1985", "Male", "CB7654321"),
        ("Pedro Silva", "17.05.2016", "Male", "CC1357924"),
    ]
    for name, born, gender, passport in people:
        await chat.say(name)
        await chat.say(born)
        await chat.press(gender)
        for answer in ("Portugal", passport, "2031-08-20"):
            reply = await chat.say(answer)
    assert reply.state == "book:review", reply.text
    review = reply.text
    assert "Adult × 2:" in review
    assert "Child: €" in review
    assert "Taxes and fees, included: €" in review
    assert "Changes: " in review
    assert "Refund: " in review
    assert "Cabin bag" in review
    assert review.index("Refund: ") < review.index("Total: €")


async def test_a_detail_is_edited_from_the_review(seam: SeamKit) -> None:
    chat = await to_review(seam)
    reply = await chat.press("Edit")
    assert reply.state == "book:edit"
    assert {"Email", "Passport number"} <= set(reply.labels)
    reply = await chat.press("Email")
    assert reply.state == "book:field"
    reply = await chat.say("not an email")
    assert reply.state == "book:field"
    reply = await chat.say("maria.silva@example.org")
    assert reply.state == "book:review"
    assert "maria.silva@example.org" in reply.text
    assert EMAIL not in reply.text


async def test_several_travellers_are_picked_before_their_detail_is_edited(
    seam: SeamKit,
) -> None:
    chat = seam.chat(USER)
    await chat.say("/start")
    await chat.say(f"LIS-FCO {seam.day(60).isoformat()} 2 adults")
    await chat.press("1")
    await chat.play(TRAVELLER_MOVES[:-1])
    await chat.press("Skip")
    for answer in ("Joao Silva", "22.11.1985"):
        await chat.say(answer)
    await chat.press("Male")
    for answer in ("Portugal", "CB7654321", "2031-08-20"):
        reply = await chat.say(answer)
    assert reply.state == "book:review"
    reply = await chat.press("Edit")
    assert reply.state == "book:edit"
    assert "Whose details do you want to change?" in reply.text
    reply = await chat.press("2. JOAO SILVA")
    assert "Email" not in reply.labels  # only the lead traveller gives contacts
    reply = await chat.press("‹ Back to review")
    assert reply.state == "book:review"


async def test_cancel_at_review_charges_nothing(seam: SeamKit) -> None:
    chat = await to_review(seam)
    reply = await chat.press("Cancel")
    assert "Booking cancelled; nothing was charged" in reply.text
    assert reply.state is None
    assert await seam.storage.list_bookings(USER) == []


async def test_while_waiting_for_payment_the_link_can_be_sent_again(seam: SeamKit) -> None:
    chat = await to_payment(seam)
    reply = await chat.say("hello?")
    assert "Waiting for your payment" in reply.text
    reply = await chat.press("Send the payment link again")
    assert "is held for you" in reply.text
    assert any(b.url for b in reply.last.buttons)
    assert reply.state == "book:payment"


async def test_after_the_confirmation_the_payment_step_ends(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    booking = await seam.booked(chat)
    reply = await chat.say("and now?")
    assert f"Booking {booking.reference} is confirmed." in reply.text
    assert reply.state is None


async def test_a_returning_traveller_is_offered_the_saved_details(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    await seam.booked(chat)
    start = await chat.say("/start")
    assert "Saved travellers: MARIA SILVA" in start.text
    await chat.say(f"LIS-FCO {seam.day(45).isoformat()}")
    reply = await chat.press("1")
    assert "Use MARIA SILVA" in reply.labels
    reply = await chat.press("Use MARIA SILVA")
    assert reply.state == "book:review"  # nothing left to ask
    assert "MARIA SILVA" in reply.text
    assert PASSPORT_MASKED in reply.text
    await chat.press("Pay")
    profile = await seam.storage.get_profile(USER)
    assert profile is not None
    assert len(profile.saved_travellers) == 1  # the same person is saved once


async def test_pay_says_what_to_do_when_too_many_links_are_open(seam: SeamKit) -> None:
    chat = await to_review(seam)
    chosen = Itinerary.model_validate((await chat.record()).data["booking"]["itinerary"])
    for n in range(MAX_OPEN_LINKS_PER_USER):
        other = chosen.model_copy(update={"id": f"{chosen.id}-{n}"})
        await seam.bookings.start_checkout(chat.id, other, (traveller(),))
    reply = await chat.press("Pay")
    assert "You already have 3 bookings waiting for payment" in reply.text
    assert reply.state == "book:review"  # still where they were
    assert not any(b.url for b in reply.last.buttons)


async def test_a_superscript_digit_in_a_forged_edit_button_is_refused(seam: SeamKit) -> None:
    chat = await to_review(seam)
    await chat.press("Edit")
    reply = await chat.press_data(await chat.current("editf", "².email"))
    assert reply.toast == "That detail can't be edited."
    assert reply.state == "book:edit"
