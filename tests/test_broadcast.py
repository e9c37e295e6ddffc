"""/broadcast through the real bot and the sandbox: preview, edit, send, progress and final
counts in the admin's chat, blocked users skipped, users who blocked the bot marked, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.sandbox import EventKind, SandboxEvent
from services.models import BroadcastStatus, DeliveryStatus
from tests.test_admin_harness import Bot, running_bot

ADMIN = 7701


async def travellers(bot: Bot, first_id: int, count: int) -> list[int]:
    """Users who have talked to the bot (a profile, an open chat)."""
    ids = [await bot.user(user_id, f"T{user_id}") for user_id in range(first_id, first_id + count)]
    actions = [await bot.sandbox.user_sends(user_id, "/start") for user_id in ids]
    for action in actions:
        await bot.sandbox.wait_for_reply(action, timeout=20)
    return ids


def received(bot: Bot, user_id: int, text: str) -> int:
    return sum(1 for m in bot.sandbox.bot_messages(user_id) if m.text == text)


def admin_said(text: str, since: int) -> Callable[[SandboxEvent], bool]:
    def match(event: SandboxEvent) -> bool:
        return (
            event.kind is EventKind.BOT_MESSAGE
            and event.chat_id == ADMIN
            and event.seq > since
            and event.message is not None
            and text in event.message.text
        )

    return match


def too_many_requests(bot: Bot) -> list[str]:
    return [
        e.error or "" for e in bot.sandbox.api_errors() if "Too Many Requests" in (e.error or "")
    ]


async def test_preview_edit_send_reaches_each_reachable_user_once() -> None:
    async with running_bot((ADMIN,)) as bot:
        await bot.user(ADMIN, "Ada")
        await bot.say(ADMIN, "/start")
        users = await travellers(bot, 7710, 10)
        blocked_by_admin, blocked_the_bot = users[-1], users[-2]
        assert (await bot.say(ADMIN, f"/block {blocked_by_admin}"))[0].startswith("⛔")
        await bot.sandbox.user_blocks_bot(blocked_the_bot)
        expected = len(await bot.storage.list_recipient_ids())
        assert expected == 10  # the admin and nine travellers; the blocked one is left out

        [prompt] = await bot.say(ADMIN, "/broadcast")
        assert prompt.startswith("📣 Write the message to send to every user")
        draft, question = await bot.say(ADMIN, "First <b>draft</b> & more")
        assert draft == "First <b>draft</b> & more"  # shown as typed: nothing interpreted
        assert f"Send it to {expected} user(s)?" in question
        assert await bot.press(ADMIN, "Edit") == ["Write the message again."]
        text = "Fares to Tokyo are down 20% this week ✈️"
        shown, _ = await bot.say(ADMIN, text)
        assert shown == text

        since = bot.sandbox.last_seq
        started = (await bot.press(ADMIN, f"Send to {expected} users"))[0]
        assert started.startswith(f"📣 Broadcast #1 started to {expected} user(s)")
        final = await bot.sandbox.wait_for_event(
            admin_said("finished", since), since=since, timeout=20
        )

        assert final.message is not None
        report = final.message.text
        assert "delivered: 9" in report
        assert "have blocked the bot: 1" in report
        assert "failed or skipped (blocked, erased): 0" in report
        assert received(bot, ADMIN, text) == 2  # the preview, then the broadcast itself
        for user_id in users:
            wanted = 0 if user_id in (blocked_by_admin, blocked_the_bot) else 1
            assert received(bot, user_id, text) == wanted, user_id
        profile = await bot.storage.get_profile(blocked_the_bot)
        assert profile is not None
        assert profile.bot_blocked  # skipped next time
        progress = [
            m.text for m in bot.sandbox.bot_messages(ADMIN) if m.text.startswith("📣 Broadcast #1:")
        ]
        assert [p.rsplit(" ", 1)[-1] for p in progress] == ["(25%).", "(50%).", "(75%)."]
        broadcast = await bot.storage.get_broadcast(1)
        assert broadcast is not None
        assert broadcast.status is BroadcastStatus.DONE
        counts = await bot.storage.broadcast_counts(1)
        assert counts[DeliveryStatus.SENT] == 9
        assert counts[DeliveryStatus.BOT_BLOCKED] == 1
        [audit] = await bot.audit("broadcast")
        assert (audit.admin_id, audit.target) == (ADMIN, "#1")
        assert audit.details["recipients"] == expected
        assert too_many_requests(bot) == []

        assert (await bot.say(ADMIN, f"/broadcast {text} again"))[-1].startswith("☝️")
        assert await bot.press(ADMIN, "Cancel") == ["Broadcast discarded: nothing was sent."]


async def test_cancel_stops_a_running_broadcast_and_reports_the_counts() -> None:
    async with running_bot((ADMIN,)) as bot:
        await bot.user(ADMIN, "Ada")
        await bot.say(ADMIN, "/start")
        assert await bot.say(ADMIN, "/broadcast_cancel") == [
            "No broadcast is running: nothing to cancel."
        ]
        users = await travellers(bot, 7800, 79)
        text = "Our summer sale starts now"

        await bot.say(ADMIN, f"/broadcast {text}")
        since = bot.sandbox.last_seq
        await bot.press(ADMIN, "Send to 80 users")
        await bot.sandbox.wait_for_event(admin_said("(25%)", since), since=since, timeout=20)
        # progress reports may arrive in between: look for the answer among them
        assert (
            "Broadcast #1 is still running. /broadcast_cancel stops it; start a new one when "
            "it is done."
        ) in await bot.say(ADMIN, "/broadcast Another one")
        answers = await bot.say(ADMIN, "/broadcast_cancel")
        assert any(
            a.startswith("✋ Cancelling broadcast #1: nobody else will get it.") for a in answers
        )
        final = await bot.sandbox.wait_for_event(
            admin_said("cancelled", since), since=since, timeout=20
        )

        await asyncio.sleep(1.0)  # nothing more goes out after the report
        # the admin's first copy is the preview
        copies = {u: received(bot, u, text) - (u == ADMIN) for u in [ADMIN, *users]}
        reached = [u for u, count in copies.items() if count]
        assert set(copies.values()) <= {0, 1}
        assert 20 <= len(reached) < 80
        assert final.message is not None
        assert f"delivered: {len(reached)}" in final.message.text
        assert f"not sent: {80 - len(reached)}" in final.message.text
        broadcast = await bot.storage.get_broadcast(1)
        assert broadcast is not None
        assert broadcast.status is BroadcastStatus.CANCELLED
        [audit] = await bot.audit("broadcast_cancel")
        assert audit.details == {"cancelled": True}
        assert too_many_requests(bot) == []


async def test_a_message_too_long_is_refused_and_the_admin_stays_on_it() -> None:
    async with running_bot((ADMIN,)) as bot:
        await bot.user(ADMIN, "Ada")
        await bot.say(ADMIN, "/broadcast")
        [refusal] = await bot.say(ADMIN, "x" * 3600)
        assert refusal == (
            "The message must be 1 to 3,500 characters; this one has 3,600. Write it again, "
            "shorter."
        )
        assert (await bot.say(ADMIN, "Short enough"))[0] == "Short enough"
        assert await bot.press(ADMIN, "Cancel") == ["Broadcast discarded: nothing was sent."]
        assert await bot.storage.list_running_broadcasts() == []
