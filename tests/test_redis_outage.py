"""Redis goes away mid-conversation: the traveller is told, nothing crashes, the chat resumes.

Redis is reached through ``redis_proxy``, a relay the test can cut or stall without touching the
server other runs share. Once with the bot in this process (PTB long-polling the sandbox), once
with a real ``travelbot webhook`` process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from tests.standins.stripe import StripeStandin
from tests.support.botkit import BotKit, Reply, running_bot
from tests.support.redis_db import RedisProxy
from tests.test_conversation_e2e import to_departure, to_review
from tests.test_workers import Worker, new_user, running_workers

UNAVAILABLE = "temporarily unavailable"


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


def assert_told_unavailable(reply: Reply) -> None:
    assert UNAVAILABLE in reply.text, reply.text
    assert "data is safe" in reply.text


@pytest.fixture
async def bot(
    tmp_path: Path,
    redis_proxy: RedisProxy,
    redis_prefix: str,
    redis_client: Redis,  # removes the prefix's keys afterwards, on the real server
) -> AsyncIterator[BotKit]:
    async with running_bot(tmp_path, redis_url=redis_proxy.url, redis_prefix=redis_prefix) as kit:
        yield kit


async def chat_shows(bot: BotKit, user: int, text: str, within: float = 10.0) -> bool:
    """Whether a bot message in the chat (sent, or edited in place) says ``text`` within
    ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if any(text in message.text for message in bot.sandbox.bot_messages(user)):
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)


async def test_redis_stopped_mid_conversation_the_user_is_told_and_the_chat_resumes(
    bot: BotKit, redis_proxy: RedisProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # Several travellers at once, so the bot holds several pooled connections when Redis goes.
    users = [new_user() for _ in range(6)]
    await asyncio.gather(*(to_departure(bot, user) for user in users))
    before = {user: await bot.state(user) for user in users}
    assert {record.state for record in before.values()} == {"search:departure"}

    await redis_proxy.stop()  # every connection cut, nothing listening
    user = users[0]
    assert_told_unavailable(await bot.say(user, "FCO"))
    assert_told_unavailable(await bot.press(user, "Add a return date"))
    assert bot.sandbox.all_callbacks_answered()  # no endless spinner on the button
    assert_told_unavailable(await bot.say(user, "/start"))
    assert_told_unavailable(await bot.say(new_user(), "/start"))  # a newcomer too

    await redis_proxy.start()
    # Nothing anyone did during the outage changed a conversation...
    assert {user: await bot.state(user) for user in users} == before
    # ...and every one goes on from where it was, with the same button, all at once.
    await asyncio.gather(*(bot.press(user, "Add a return date") for user in users))
    # The button's answer can come a moment before the message when six chats reconnect at once
    # (seen on Python 3.13): wait for each chat to show the return question, well inside the
    # minute a stuck lock would take.
    for user in users:
        assert await chat_shows(bot, user, "Return trip: when do you fly out?"), user
    for user in users:
        assert (await bot.state(user)).state == "search:departure"
    assert bot.runtime.application.running
    assert errors_logged(caplog) == []
    assert not bot.sandbox.api_errors()


async def test_a_hung_redis_gets_the_same_answer_within_seconds(
    bot: BotKit, redis_proxy: RedisProxy, caplog: pytest.LogCaptureFixture
) -> None:
    user = new_user()
    await to_departure(bot, user)
    before = await bot.state(user)

    await redis_proxy.stall()  # connections accepted, commands swallowed, never answered
    for text in ("FCO", "/start"):
        started = time.monotonic()
        assert_told_unavailable(await bot.say(user, text, timeout=10))
        assert time.monotonic() - started < 5

    await redis_proxy.start()
    assert await bot.state(user) == before
    reply = await bot.press(user, "Add a return date")
    assert "when do you fly out?" in reply.text
    assert errors_logged(caplog) == []


class RedisGoesWithCheckout(StripeStandin):
    """Stripe, where creating a Checkout Session is the moment Redis goes away: the Pay turn
    has taken the chat's lock and read its state, and cannot save what it did."""

    def __init__(self, proxy: RedisProxy) -> None:
        super().__init__()
        self.proxy = proxy
        self.armed = False

    async def _create_session(self, request: web.Request) -> web.Response:
        if self.armed:
            self.armed = False
            await self.proxy.stop()
        return await super()._create_session(request)


async def test_redis_lost_during_pay_the_traveller_gets_the_link_and_the_chat_moves_on(
    tmp_path: Path,
    redis_proxy: RedisProxy,
    redis_prefix: str,
    redis_client: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stripe = RedisGoesWithCheckout(redis_proxy)
    async with (
        stripe,
        running_bot(
            tmp_path,
            redis_url=redis_proxy.url,
            redis_prefix=redis_prefix,
            stripe_secret_key=stripe.api_key,
            stripe_webhook_secret=stripe.webhook_secret,
            stripe_api_base=stripe.base_url,
        ) as bot,
    ):
        user = new_user()
        await to_review(bot, user)
        stripe.armed = True
        reply = await bot.press(user, "Pay")

        # The Checkout Session exists, and the traveller was given its link.
        [session] = stripe.sessions.values()
        assert "is held for you" in reply.text, reply.text
        links = [button.url for row in reply.last.buttons for button in row]
        assert session["url"] in links
        assert UNAVAILABLE not in reply.text
        assert bot.sandbox.all_callbacks_answered()

        # Redis is back: the chat is not left locked for a minute, and it is where the
        # traveller was told it is (waiting for the payment), not back at the review.
        await redis_proxy.start()
        reply = await bot.say(user, "did it work?")
        assert "Waiting for your payment" in reply.text, reply.text
        assert (await bot.state(user)).state == "book:payment"
        assert len(stripe.sessions) == 1
        assert errors_logged(caplog) == []


async def _health(worker: Worker, path: str = "/readyz") -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{worker.base_url}{path}") as response,
    ):
        body: dict[str, Any] = await response.json()
        return response.status, body


@pytest.mark.timeout(60)
async def test_a_webhook_worker_rides_out_a_redis_outage(
    tmp_path: Path, redis_proxy: RedisProxy, redis_prefix: str, redis_client: Redis
) -> None:
    async with running_workers(
        tmp_path, count=1, redis_url=redis_proxy.url, redis_prefix=redis_prefix
    ) as cluster:
        kit = cluster.kit
        (worker,) = cluster.workers
        user = new_user()
        await to_departure(kit, user)
        before = await kit.state(user)

        await redis_proxy.stop()
        assert_told_unavailable(await kit.say(user, "FCO"))
        assert_told_unavailable(await kit.press(user, "Add a return date"))
        assert kit.sandbox.all_callbacks_answered()
        status, health = await _health(worker)
        assert status == 503
        assert health["ports"]["state"]["ok"] is False
        # Not ready, but alive: the platform's liveness probe must not restart it for this.
        assert await _health(worker, "/healthz") == (200, {"status": "ok"})
        assert worker.process.poll() is None  # still serving

        await redis_proxy.start()
        assert await kit.state(user) == before
        reply = await kit.press(user, "Add a return date")
        assert "when do you fly out?" in reply.text
        assert (await kit.state(user)).state == "search:departure"
        status, health = await _health(worker)
        assert status == 200, health
        assert worker.problems() == [], worker.output()
        assert await worker.stop() == 0  # and it still shuts down cleanly
