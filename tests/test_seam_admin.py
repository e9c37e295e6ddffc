"""The admin flow at the engine seam: who may use it, usage lines, the menu, refund and broadcast
confirmations, and the admin put back where they were. Admin commands against a real Stripe
stand-in and the Bot API stay end to end (tests/test_admin*.py, tests/test_broadcast*.py)."""

from __future__ import annotations

import logging
import re

import pytest

from conversations.engine import UNKNOWN_COMMAND
from services.models import BookingStatus
from tests.support.flowkit import ADMIN_ID, TRAVELLER_ID, Chat, SeamKit, to_refund_confirm
from tests.test_admin_harness import make_booking

S = BookingStatus

ADMIN_COMMANDS = [
    "/admin",
    "/stats",
    "/stats 7d",
    "/booking K7MP3Q",
    f"/user {ADMIN_ID}",
    "/refund K7MP3Q 10 because",
    "/ticketed K7MP3Q",
    f"/block {ADMIN_ID}",
    f"/unblock {TRAVELLER_ID}",
    "/broadcast Hello everyone",
    "/broadcast_cancel",
]


def _admin(seam: SeamKit) -> Chat:
    return seam.chat(ADMIN_ID, "Ada", username="ada_admin")


@pytest.mark.parametrize("text", ADMIN_COMMANDS)
async def test_a_non_admin_gets_the_unknown_command_answer_and_is_audited(
    seam: SeamKit, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    command = text.split(maxsplit=1)[0]
    someone = seam.chat(TRAVELLER_ID)
    await someone.say("/start")
    before = await someone.record()
    unknown = await someone.say("/nosuchcommand")
    with caplog.at_level(logging.WARNING, logger="conversations.flows.admin"):
        answer = await someone.say(text)
    assert answer.text == unknown.text == UNKNOWN_COMMAND
    assert await someone.record() == before  # still where they were
    [denied] = await seam.storage.list_audit(limit=10)
    assert (denied.action, denied.admin_id, denied.target) == ("denied", TRAVELLER_ID, command)
    assert denied.details == {}  # never the arguments
    assert f"user {TRAVELLER_ID} tried the admin command {command}" in caplog.text
    assert await seam.storage.list_running_broadcasts() == []


MALFORMED = [
    ("/admin now", "/admin"),
    ("/stats yesterday", "/stats [today|7d|30d]"),
    ("/stats 7d 30d", "/stats [today|7d|30d]"),
    ("/booking", "/booking REF"),
    ("/booking K7MP3Q EXTRA", "/booking REF"),
    ("/booking <b>", "/booking REF"),
    ("/user", "/user ID or /user @username"),
    ("/user 12 34", "/user ID or /user @username"),
    ("/user -5", "/user ID or /user @username"),
    ("/user 0", "/user ID or /user @username"),
    ("/user @not-a-name", "/user ID or /user @username"),
    ("/refund", "/refund REF [amount] [reason]"),
    ("/refund !!", "/refund REF [amount] [reason]"),
    ("/refund K7MP3Q -5", "/refund REF [amount] [reason]"),
    ("/refund K7MP3Q 1.2.3", "/refund REF [amount] [reason]"),
    ("/ticketed", "/ticketed REF"),
    ("/ticketed K7MP3Q now", "/ticketed REF"),
    ("/block", "/block ID or /block @username"),
    ("/block 1 2", "/block ID or /block @username"),
    ("/unblock", "/unblock ID or /unblock @username"),
    ("/unblock x y", "/unblock ID or /unblock @username"),
    ("/broadcast_cancel soon", "/broadcast_cancel [broadcast number]"),
]


@pytest.mark.parametrize(("text", "usage"), MALFORMED)
async def test_malformed_arguments_get_the_usage_line_and_no_audit_row(
    seam: SeamKit, text: str, usage: str
) -> None:
    answer = await _admin(seam).say(text)
    assert len(answer.messages) == 1
    assert answer.text.startswith(f"Usage: {usage}") or (
        "is not an amount" in answer.text and usage in answer.text
    )
    assert await seam.storage.list_audit(limit=10) == []  # a usage line is not an action


async def test_the_menu_answers_and_puts_the_admin_back_in_their_search(seam: SeamKit) -> None:
    booking = await make_booking(seam.storage, TRAVELLER_ID, S.CONFIRMED)
    admin = _admin(seam)
    await admin.say("/start")
    assert "To where?" in (await admin.say("Lisbon")).text

    menu = await admin.say("/admin")
    assert menu.text.startswith("🛠 Admin.")
    assert menu.state == "admin:menu"
    stats = await admin.press("7 days")
    assert stats.text.startswith("📊 Stats, last 7 days")
    ask = await admin.press("🧾 Booking")
    assert ask.text == "Send the booking reference, e.g. K7MP3Q."
    assert ask.state == "admin:ask"
    view = await admin.say(booking.reference)
    assert f"Booking {booking.reference}" in view.text
    assert view.last.labels == ["‹ Admin menu", "Close"]
    assert view.state == "admin:menu"
    back = await admin.press("‹ Admin menu")
    assert back.text.startswith("🛠 Admin.")
    closed = await admin.press("Close")
    assert closed.text == "Admin menu closed."
    assert closed.state == "search:destination"
    dates = await admin.say("Porto")  # the search goes on where it was
    assert dates.text.startswith("LIS → OPO. When do you fly?")


async def test_a_refund_confirmed_refunds_and_tells_the_traveller(seam: SeamKit) -> None:
    admin = await to_refund_confirm(seam)
    traveller = seam.chat(TRAVELLER_ID)
    booking = await traveller.booking()
    question = admin.last
    assert f"Refund booking {booking.reference}" in question.text
    assert "the booking ends refunded" in question.text
    done = await admin.press("Refund")
    assert f"Booking {booking.reference} refunded in full" in done.text
    assert done.state is None
    refunded = await traveller.booking()
    assert refunded.status is S.REFUNDED
    assert any("refund" in text.lower() for text in traveller.notifications()[-2:])
    assert "refund" in [a.action for a in await seam.storage.list_audit(limit=10)]


async def test_a_refund_declined_changes_nothing(seam: SeamKit) -> None:
    admin = await to_refund_confirm(seam)
    reply = await admin.press("Don't refund")
    assert reply.text == "Not refunded."
    after = await seam.chat(TRAVELLER_ID).booking()
    assert after.status is S.CONFIRMED
    assert after.refunded_minor == 0
    latest = (await seam.storage.list_audit(limit=1))[0]
    assert (latest.action, latest.target) == ("refund_declined", after.reference)


async def test_a_broadcast_is_previewed_edited_and_sent_to_every_user(seam: SeamKit) -> None:
    for user_id in (6101, 6102):
        await seam.chat(user_id).say("/start")
    admin = _admin(seam)
    ask = await admin.say("/broadcast")
    assert ask.state == "admin:broadcast_text"
    preview = await admin.say("Fares to <Rome> are down")
    assert preview.state == "admin:broadcast_confirm"
    assert preview.messages[0].text == "Fares to <Rome> are down"  # exactly as users get it
    assert "Send it to 2 user(s)?" in preview.text
    again = await admin.press("Edit")
    assert again.state == "admin:broadcast_text"
    await admin.say("Fares to Rome are down this week")
    sent = await admin.press("Send to 2 users")
    started = re.search(r"Broadcast #(\d+) started to 2 user\(s\)", sent.text)
    assert started is not None, sent.text
    await seam.services.broadcasts.wait(int(started.group(1)))
    for user_id in (6101, 6102):
        assert seam.chat(user_id).notifications() == ["Fares to Rome are down this week"]
    assert any(
        text.startswith(f"✅ Broadcast #{started.group(1)} finished")
        for text in admin.notifications()
    )


async def test_a_broadcast_discarded_sends_nothing(seam: SeamKit) -> None:
    await seam.chat(6101).say("/start")
    admin = _admin(seam)
    await admin.say("/broadcast Not this one")
    reply = await admin.press("Cancel")
    assert reply.text == "Broadcast discarded: nothing was sent."
    assert reply.state is None
    assert seam.chat(6101).notifications() == []
