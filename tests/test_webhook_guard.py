"""Both webhooks against what a careless or hostile sender posts, over real HTTP.

The bot runs as ``travelbot webhook`` serves it (the same ``init_app`` and runtime), with the
sandbox Bot API for Telegram and the Stripe stand-in for Stripe. Wrong shapes get 400 and no
traceback, bodies are bounded in size and in time, and the Telegram route keeps a bound on the
updates it handles at once.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.bootstrap import UPDATES_IN_FLIGHT, Runtime, open_runtime
from bot.config import load_settings
from bot.sandbox import SandboxBotApi
from bot.web import UPDATE_GATE, init_app, start_site
from bot.web_guard import STRIPE_MAX_BYTES, TELEGRAM_MAX_BYTES, UpdateGate
from conversations.state import ChatKey, Turn
from tests.standins.stripe import StripeStandin
from tests.test_workers import sandbox_token

SECRET = "webhook_guard_secret"
BODY_TIMEOUT = 0.5  # the test's body deadline; the served default is BODY_READ_TIMEOUT


@dataclass
class Served:
    base_url: str
    host: str
    port: int
    runtime: Runtime
    app: web.Application
    sandbox: SandboxBotApi
    stripe: StripeStandin

    @property
    def telegram(self) -> str:
        return f"{self.base_url}/telegram/webhook"

    @property
    def stripe_hook(self) -> str:
        return f"{self.base_url}/stripe/webhook"

    @property
    def gate(self) -> UpdateGate:
        return self.app[UPDATE_GATE]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    token = sandbox_token()
    sandbox = SandboxBotApi(token=token, idle_quiet=0.05, per_chat_burst=10_000)
    await sandbox.start()
    async with StripeStandin() as stripe:
        settings = load_settings(
            sqlite_path=tmp_path / "bot.sqlite3",
            telegram_webhook_secret=SECRET,
            stripe_secret_key=stripe.api_key,
            stripe_webhook_secret=stripe.webhook_secret,
            stripe_api_base=stripe.base_url,
        )
        try:
            async with open_runtime(
                settings, token=token, telegram_base_url=sandbox.url
            ) as runtime:
                app = init_app(runtime, telegram_webhook_route=True, body_read_timeout=BODY_TIMEOUT)
                runner = await start_site(app)
                host, port = runner.addresses[0][:2]
                await runtime.application.start()
                try:
                    yield Served(f"http://{host}:{port}", host, port, runtime, app, sandbox, stripe)
                finally:
                    await runtime.application.stop()
                    await runner.cleanup()
        finally:
            await sandbox.stop()


async def started_user(served: Served, name: str = "Ana") -> int:
    """A sandbox user who has opened the chat (the bot may write to it); what they sent stays
    queued, since this bot neither polls nor has a webhook set: the test posts updates itself."""
    user = (await served.sandbox.add_user(first_name=name)).id
    await served.sandbox.user_sends(user, "hi")
    return user


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


async def post(
    url: str, body: bytes, headers: dict[str, str] | None = None, *, chunked: bool = False
) -> int:
    async def chunks() -> AsyncIterator[bytes]:
        yield body

    data: Any = chunks() if chunked else io.BytesIO(body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=headers or {}) as response,
    ):
        await response.read()
        return response.status


def telegram_headers() -> dict[str, str]:
    return {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}


def text_update(update_id: int, user_id: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": "Sam"},
            "from": {"id": user_id, "is_bot": False, "first_name": "Sam"},
            "text": text,
        },
    }


def _with(update: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed: dict[str, Any] = json.loads(json.dumps(update))
    node: Any = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


# wrong shapes ---------------------------------------------------------------------------------
async def test_telegram_updates_of_the_wrong_shape_get_400_and_no_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    user = await started_user(served)
    good = text_update(1, user, "/start")
    callback = {
        "update_id": 2,
        "callback_query": {
            "id": "q1",
            "from": {"id": user, "is_bot": False, "first_name": "Ana"},
            "chat_instance": "c1",
            "data": "x|y|z",
        },
    }
    bodies: list[bytes] = [
        b"[]",
        b"null",
        b"5",
        b'"update"',
        b"{}",
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the parser goes
        json.dumps({"update_id": 3, "message": {"reply_to_message": None} | good["message"]})
        .replace("null", "[" * 50_000 + "]" * 50_000)
        .encode(),
        b'{"update_id": "1"}',
        b'{"update_id": 1.5}',
        json.dumps(_with(good, ("message",), [])).encode(),
        json.dumps(_with(good, ("message",), "hello")).encode(),
        json.dumps(_with(good, ("message", "text"), 5)).encode(),
        json.dumps(_with(good, ("message", "chat"), "private")).encode(),
        json.dumps(_with(good, ("message", "chat", "id"), "abc")).encode(),
        json.dumps(_with(good, ("message", "from"), "Ana")).encode(),
        json.dumps(_with(good, ("message", "from", "id"), None)).encode(),
        json.dumps(_with(good, ("message", "date"), "today")).encode(),
        json.dumps(_with(good, ("message", "entities"), "bold")).encode(),
        json.dumps(_with(callback, ("callback_query", "data"), 5)).encode(),
        json.dumps(_with(callback, ("callback_query", "from"), [])).encode(),
    ]
    for body in bodies:
        assert await post(served.telegram, body, telegram_headers()) == 400, body[:80]
    assert errors_logged(caplog) == []
    assert served.sandbox.bot_messages(user) == []

    # The same route still serves a real update.
    assert await post(served.telegram, json.dumps(good).encode(), telegram_headers()) == 200
    assert "Where are you flying from?" in served.sandbox.bot_messages(user)[-1].text


async def test_signed_stripe_events_of_the_wrong_shape_get_400_and_no_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    stripe = served.stripe
    real = stripe.make_event("checkout.session.completed", {"id": "cs_x", "object": "x"})
    bodies: list[bytes] = [
        b"[]",
        b"null",
        b"{}",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps(_with(real, ("data",), [])).encode(),
        json.dumps(_with(real, ("data", "object"), None)).encode(),
        json.dumps(_with(real, ("id",), 5)).encode(),
        json.dumps(_with(real, ("created",), "yesterday")).encode(),
        json.dumps(_with(real, ("data", "object", "amount_total"), "100")).encode(),
        json.dumps(_with(real, ("data", "object", "metadata"), ["booking_id"])).encode(),
    ]
    for body in bodies:
        headers = {"Stripe-Signature": stripe.sign(body), "Content-Type": "application/json"}
        assert await post(served.stripe_hook, body, headers) == 400, body[:80]
    assert errors_logged(caplog) == []


# size -----------------------------------------------------------------------------------------
async def test_oversized_bodies_are_refused_before_they_are_read(served: Served) -> None:
    # Stripe: unauthenticated until verified, so the bound applies before the signature check.
    big = b'{"pad": "' + b"x" * STRIPE_MAX_BYTES + b'"}'
    signed = {"Stripe-Signature": served.stripe.sign(big)}
    assert await post(served.stripe_hook, big, signed) == 413
    assert await post(served.stripe_hook, big, signed, chunked=True) == 413  # no length given
    # Telegram: the same after its secret header.
    huge = b'{"update_id": 1, "pad": "' + b"x" * TELEGRAM_MAX_BYTES + b'"}'
    assert await post(served.telegram, huge, telegram_headers()) == 413
    assert await post(served.telegram, huge, telegram_headers(), chunked=True) == 413
    assert await post(served.telegram, huge, {"X-Telegram-Bot-Api-Secret-Token": "no"}) == 403


async def _slow_loris(served: Served, path: str, headers: dict[str, str]) -> bytes:
    """Declare a 1000-byte body, send ten bytes, then nothing: what comes back, if anything."""
    reader, writer = await asyncio.open_connection(served.host, served.port)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {served.host}", "Content-Length: 1000"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + b'{"update_')
        await writer.drain()
        # Far beyond the server's deadline: a server without one never answers.
        return await asyncio.wait_for(reader.read(4096), timeout=BODY_TIMEOUT + 20)
    finally:
        writer.close()


async def test_a_body_that_trickles_in_is_cut_off(served: Served) -> None:
    for path, headers in [
        ("/stripe/webhook", {"Stripe-Signature": "t=1,v1=00"}),
        ("/telegram/webhook", {"X-Telegram-Bot-Api-Secret-Token": SECRET}),
    ]:
        answer = await _slow_loris(served, path, headers)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
    # Meanwhile the server went on serving everyone else.
    user = await started_user(served)
    update = json.dumps(text_update(1, user, "/start")).encode()
    assert await post(served.telegram, update, telegram_headers()) == 200


# updates in flight ----------------------------------------------------------------------------
async def _until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_the_webhook_handles_a_bounded_number_of_updates_at_once(served: Served) -> None:
    """Beyond the bound an update waits for a slot (Telegram's connection stays open); beyond
    a full waiting line it is answered 503, which Telegram delivers again later."""
    runtime, gate = served.runtime, served.gate
    limit = UPDATES_IN_FLIGHT
    assert gate.limit == limit
    users = [await started_user(served, f"U{n}") for n in range(limit + 1)]
    busy, free = users[:limit], users[limit]
    # Each busy chat is held, as a slow turn holds it: their updates wait inside the engine.
    store = runtime.adapters.state
    bot_id = runtime.application.bot.id
    held: list[Turn] = [
        await store.begin(ChatKey(bot_id=bot_id, chat_id=user), lock_ttl=60) for user in busy
    ]
    ids = iter(range(1000, 10_000))
    headers = telegram_headers()

    def send(user: int) -> asyncio.Task[int]:
        body = json.dumps(text_update(next(ids), user, "hello")).encode()
        return asyncio.create_task(post(served.telegram, body, headers))

    try:
        first = [send(user) for user in busy]
        await _until(lambda: gate.in_flight == limit, "every slot to be taken")
        # A free chat's update now waits for a slot instead of adding to the load.
        waiting = send(free)
        await _until(lambda: gate.waiting == 1, "the free chat's update to wait")
        assert not waiting.done()
        assert gate.in_flight == limit
        # The waiting line is bounded too: past it, 503 at once.
        queued = [send(busy[n % limit]) for n in range(gate.queue - 1)]
        await _until(lambda: gate.waiting == gate.queue, "the waiting line to fill")
        assert await send(free) == 503
        assert gate.in_flight == limit
    finally:
        for turn in held:
            await store.release(turn)
    assert await asyncio.gather(*first, waiting, *queued) == [200] * (limit + gate.queue)
    assert served.sandbox.bot_messages(free), "the update that waited was handled"
    assert (gate.in_flight, gate.waiting) == (0, 0)
