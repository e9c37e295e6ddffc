"""Several ``travelbot webhook`` processes serve one bot: what a traveller sees does not change.

Each worker is a real process (``python -m bot webhook``) with its own port, sharing one Redis
(a key prefix of the test's own) and one Supabase-compatible database (the ``supabase_stack``).
The sandbox Bot API runs in the test and stands in for Telegram plus a load balancer: it hands
one chat's updates to the workers in turn (``set_webhook_targets``), the next only after the
previous was answered, and retries a refused delivery on the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from bot.sandbox import ChatMessage, EventKind, SandboxBotApi
from conversations.state import ChatKey, StateRecord
from conversations.state_redis import RedisStateStore
from tests.support.botkit import BotKit
from tests.support.redis_db import delete_prefixed
from tests.support.supabase_stack import SupabaseStack
from tests.support.workers import bot_environment
from tests.test_conversation_e2e import (
    TRAVELLER,
    TRAVELLER_REST,
    to_payment,
    to_results,
)

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "travelbot webhook: listening on port"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sandbox_token() -> str:
    """A bot of the test's own: its id is in every state key, so runs never share a chat."""
    return f"{secrets.randbelow(10**9) + 10**9}:SANDBOX-workers-{secrets.token_hex(8)}"


@dataclass
class Worker:
    """One ``travelbot webhook`` process and where its output goes."""

    name: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/telegram/webhook"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def problems(self) -> list[str]:
        """Log lines a healthy worker never writes: errors (an unhandled exception in a handler
        or a task is logged at ERROR). Expected trouble, such as Redis being away, is a WARNING."""
        return [
            line for line in self.output().splitlines() if " ERROR " in line or " CRITICAL " in line
        ]

    async def ready(self, timeout: float = 30) -> None:
        """Wait until the worker has set its webhook and listens."""
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} did not start:\n{self.output()}")
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 15) -> int:
        """SIGTERM (graceful: updates in flight finish), then wait; SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"worker {self.name} ignored SIGTERM:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@dataclass
class WorkerEnv:
    """Settings every worker of one test shares (the differences are the port and the name)."""

    folder: Path
    token: str
    sandbox_url: str
    redis_url: str
    redis_prefix: str
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    supabase: SupabaseStack | None = None

    def environment(self, port: int) -> dict[str, str]:
        env = bot_environment(
            token=self.token,
            telegram_url=self.sandbox_url,
            redis_url=self.redis_url,
            redis_prefix=self.redis_prefix,
            sqlite_path=self.folder / "bot.sqlite3",
            supabase=self.supabase,
        )
        return env | {
            "TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram/webhook",
            "TELEGRAM_WEBHOOK_SECRET": self.secret,
            "PORT": str(port),
            # Each webhook process runs the background jobs itself, as on one dyno without a
            # worker; the arq queue's processes are tests/support/workers.py's.
            "JOB_QUEUE_BACKEND": "embedded",
        }

    def spawn(self, name: str) -> Worker:
        port = free_port()
        log = self.folder / f"worker-{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(  # reaped by Worker.stop() or kill()
                [sys.executable, "-m", "bot", "webhook"],
                cwd=self.folder,  # no stray .env from the checkout
                env=self.environment(port),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return Worker(name=name, port=port, log=log, process=process)


class WorkerKit(BotKit):
    """``BotKit`` for a bot that runs in other processes: state is read from Redis directly."""

    def __init__(self, sandbox: SandboxBotApi, store: RedisStateStore) -> None:
        self.sandbox = sandbox
        self.store = store
        self.base_url = ""
        self._users = set()

    async def state(self, user_id: int) -> StateRecord:
        return await self.store.peek(ChatKey(bot_id=self.sandbox.bot_id, chat_id=user_id))

    def deliveries(self, user_id: int) -> list[tuple[str, bool]]:
        """Where each delivery attempt of the chat's updates went, and whether it was taken."""
        return [
            (str(event.detail.get("target")), event.kind == EventKind.UPDATE_DELIVERED)
            for event in self.sandbox.events(
                kinds={EventKind.UPDATE_DELIVERED, EventKind.DELIVERY_FAILED}
            )
            if event.chat_id == user_id and "target" in event.detail
        ]


@dataclass
class Cluster:
    kit: WorkerKit
    env: WorkerEnv
    workers: list[Worker]

    @property
    def sandbox(self) -> SandboxBotApi:
        return self.kit.sandbox

    async def route_to(self, *workers: Worker) -> None:
        await self.sandbox.set_webhook_targets([w.webhook_url for w in workers])


@contextlib.asynccontextmanager
async def running_workers(
    folder: Path,
    *,
    count: int,
    redis_url: str,
    redis_prefix: str,
    supabase: SupabaseStack | None = None,
) -> AsyncIterator[Cluster]:
    """A sandbox and ``count`` webhook workers on one Redis prefix; all gone afterwards."""
    token = sandbox_token()
    sandbox = SandboxBotApi(token=token, idle_quiet=0.05, webhook_retry_delay=0.1)
    await sandbox.start()
    env = WorkerEnv(
        folder=folder,
        token=token,
        sandbox_url=sandbox.url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        supabase=supabase,
    )
    store = RedisStateStore.from_url(redis_url, prefix=redis_prefix)
    workers: list[Worker] = []
    try:
        workers = [env.spawn(chr(ord("a") + n)) for n in range(count)]
        await asyncio.gather(*(worker.ready() for worker in workers))
        yield Cluster(kit=WorkerKit(sandbox, store), env=env, workers=workers)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                await worker.stop()
        await sandbox.stop()
        await store.close()
        client = Redis.from_url(redis_url, socket_timeout=2)
        try:
            await delete_prefixed(client, redis_prefix)
        finally:
            await client.aclose()


@pytest.fixture
async def cluster(
    tmp_path: Path, redis_url: str, redis_prefix: str, supabase_stack: SupabaseStack
) -> AsyncIterator[Cluster]:
    # Empty tables: a worker resumes unfinished broadcasts it finds, earlier tests' included.
    await supabase_stack.reset()
    async with running_workers(
        tmp_path, count=2, redis_url=redis_url, redis_prefix=redis_prefix, supabase=supabase_stack
    ) as running:
        yield running


# What differs between two runs of the same conversation and is not the bot's doing.
_VOLATILE = [
    (re.compile(r"http://127\.0\.0\.1:\d+"), "http://<worker>"),
    (re.compile(r"/checkout/sandbox/[\w-]+"), "/checkout/sandbox/<session>"),
    # Each booking's own airline reference and e-tickets (the demo airline's too).
    (re.compile(r"Airline booking reference: \w+"), "Airline booking reference: <pnr>"),
    (re.compile(r"E-tickets: [\d, ]+"), "E-tickets: <tickets>"),
    # The payment deadline is the clock's at Pay: two chats can straddle a minute.
    (re.compile(r"Pay by \d\d:\d\d UTC"), "Pay by <deadline> UTC"),
]


def normalised(
    messages: list[ChatMessage], references: dict[str, str]
) -> list[tuple[bool, str, list[list[str]]]]:
    """A chat as the traveller reads it: who said what, and the buttons' labels and links."""

    def clean(text: str) -> str:
        for reference, placeholder in references.items():
            text = text.replace(reference, placeholder)
        for pattern, placeholder in _VOLATILE:
            text = pattern.sub(placeholder, text)
        return text

    return [
        (
            m.from_bot,
            clean(m.text),
            [
                [clean(b.label) + (f" -> {clean(b.url)}" if b.url else "") for b in row]
                for row in m.buttons
            ],
        )
        for m in messages
        if not m.deleted
    ]


async def reference_of(kit: WorkerKit, user: int) -> str:
    reference = (await kit.state(user)).data["booking"]["reference"]
    assert isinstance(reference, str)
    return reference


def checkout_link(kit: WorkerKit, user: int) -> str:
    for message in reversed(kit.sandbox.bot_messages(user)):
        for button in message.flat_buttons:
            if button.url and "/checkout/sandbox/" in button.url:
                return button.url
    raise AssertionError(f"no checkout link in chat {user}")


async def pay_on(worker: Worker, kit: WorkerKit, user: int) -> list[ChatMessage]:
    """Pay the chat's sandbox checkout on ``worker``'s page; returns what the chat then got."""
    path = re.sub(r"^http://[^/]+", "", checkout_link(kit, user))
    since = kit.sandbox.last_seq
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{worker.base_url}{path}/pay") as response,
    ):
        assert response.status == 200, await response.text()
    return await kit.sandbox.wait_for_messages(user, since=since, timeout=15)


async def finish_booking_from_results(kit: WorkerKit, user: int) -> None:
    """From the results to the payment link: the second half of ``to_payment``."""
    await kit.press(user, "1")
    for answer in TRAVELLER:
        await kit.say(user, answer)
    await kit.press(user, "Female")
    for answer in TRAVELLER_REST:
        await kit.say(user, answer)
    await kit.press(user, "Skip")
    await kit.press(user, "Pay")


def alternated(targets: list[str]) -> bool:
    return all(a != b for a, b in itertools.pairwise(targets))


def new_user() -> int:
    """A traveller no earlier test met: the database (saved travellers) outlives each test."""
    return 10**8 + secrets.randbelow(10**8)


@pytest.mark.timeout(90)
async def test_two_workers_take_turns_and_the_traveller_sees_what_one_worker_shows(
    cluster: Cluster,
) -> None:
    kit = cluster.kit
    alone_user, shared_user = new_user(), new_user()
    a, b = cluster.workers

    await cluster.route_to(a)
    await to_payment(kit, alone_user)
    await cluster.route_to(a, b)
    await to_payment(kit, shared_user)

    assert (await kit.state(alone_user)).state == "book:payment"
    assert (await kit.state(shared_user)).state == "book:payment"
    # Every update of the shared chat was taken at the first attempt, by each worker in turn.
    deliveries = kit.deliveries(shared_user)
    assert all(taken for _, taken in deliveries)
    targets = [target for target, _ in deliveries]
    assert {a.webhook_url, b.webhook_url} == set(targets)
    assert alternated(targets)
    assert {target for target, _ in kit.deliveries(alone_user)} == {a.webhook_url}

    # Both pay on the worker that did not make their link: the database is shared too.
    alone_paid = await pay_on(b, kit, alone_user)
    shared_paid = await pay_on(a, kit, shared_user)
    assert any("confirmed" in m.text.lower() for m in alone_paid)
    assert any("confirmed" in m.text.lower() for m in shared_paid)

    references = {
        await reference_of(kit, alone_user): "<ref>",
        await reference_of(kit, shared_user): "<ref>",
    }
    alone = normalised(kit.sandbox.transcript(alone_user), references)
    shared = normalised(kit.sandbox.transcript(shared_user), references)
    assert shared == alone

    # A button from an early step still gets its "expired" notice (answered in the webhook's
    # HTTP answer) and changes nothing, whichever worker takes it.
    before = await kit.state(shared_user)
    old = next(
        (m.message_id, b.callback_data)
        for m in kit.sandbox.bot_messages(shared_user)
        for b in m.flat_buttons
        if "Add a return date" in b.label and b.callback_data
    )
    for _ in cluster.workers:
        reply = await kit.press_raw(shared_user, *old)
        assert reply.notice is not None
        assert "expired" in reply.notice
    assert await kit.state(shared_user) == before
    assert kit.sandbox.all_callbacks_answered()
    assert not kit.sandbox.api_errors()
    for worker in cluster.workers:
        assert worker.problems() == [], worker.output()


@pytest.mark.timeout(90)
async def test_a_worker_killed_mid_conversation_leaves_the_chat_to_the_other(
    cluster: Cluster,
) -> None:
    kit = cluster.kit
    alone_user, killed_user = new_user(), new_user()
    a, b = cluster.workers

    await cluster.route_to(a)
    await to_payment(kit, alone_user)

    await cluster.route_to(a, b)
    await to_results(kit, killed_user)
    served_by_b = sum(1 for target, _ in kit.deliveries(killed_user) if target == b.webhook_url)
    assert served_by_b > 0
    b.kill()  # SIGKILL: no goodbye, no cleanup
    killed_at = kit.sandbox.last_seq
    await finish_booking_from_results(kit, killed_user)

    assert (await kit.state(killed_user)).state == "book:payment"
    after = [
        (str(e.detail["target"]), e.kind)
        for e in kit.sandbox.events(
            killed_at, kinds={EventKind.UPDATE_DELIVERED, EventKind.DELIVERY_FAILED}
        )
        if e.chat_id == killed_user
    ]
    # The dead worker's turns were refused and retried on the live one; nothing was dropped.
    assert (b.webhook_url, EventKind.DELIVERY_FAILED) in after
    assert all(
        target == a.webhook_url for target, kind in after if kind == EventKind.UPDATE_DELIVERED
    )
    assert not any(
        e.detail.get("dropped") for e in kit.sandbox.events(kinds={EventKind.DELIVERY_FAILED})
    )

    references = {
        await reference_of(kit, alone_user): "<ref>",
        await reference_of(kit, killed_user): "<ref>",
    }
    assert normalised(kit.sandbox.transcript(killed_user), references) == normalised(
        kit.sandbox.transcript(alone_user), references
    )
    assert kit.sandbox.all_callbacks_answered()
    assert a.problems() == [], a.output()


async def _post_update(worker: Worker, update: dict[str, object], secret: str | None) -> int:
    headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
    async with (
        aiohttp.ClientSession() as session,
        session.post(worker.webhook_url, json=update, headers=headers) as response,
    ):
        return response.status


async def test_a_worker_refuses_updates_without_the_right_secret(cluster: Cluster) -> None:
    kit = cluster.kit
    stranger = new_user()
    worker = cluster.workers[0]
    await kit.user(stranger)
    start = {
        "update_id": 900_001,
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": stranger, "type": "private", "first_name": "Sam"},
            "from": {"id": stranger, "is_bot": False, "first_name": "Sam"},
            "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }
    secret = cluster.env.secret
    forged = [
        None,  # no header at all
        "",
        "wrong",
        secret[:-1] + ("A" if secret[-1] != "A" else "B"),  # same length, one character off
        secret + "x",
        secret.upper() if secret.upper() != secret else secret.lower() + "x",
    ]
    for attempt in forged:
        assert await _post_update(worker, start, attempt) == 403, attempt
    # A forged update did nothing: no conversation, no message to the chat.
    assert (await kit.state(stranger)).state is None
    assert kit.sandbox.bot_messages(stranger) == []

    # With the right secret, a body that is not an update is refused as such.
    assert await _post_update(worker, {"not": "an update"}, secret) == 400
    # The sandbox, which knows the secret, gets the same /start through.
    reply = await kit.say(stranger, "/start")
    assert "Where are you flying from?" in reply.text
    assert (await kit.state(stranger)).state == "search:origin"


async def test_the_sandbox_runs_a_method_a_worker_puts_in_its_webhook_answer() -> None:
    """What the workers rely on to answer button presses without a request of their own."""
    answers: list[dict[str, object]] = []

    async def webhook(request: web.Request) -> web.Response:
        update = await request.json()
        chat_id = update["message"]["chat"]["id"]
        answer = answers.pop(0) if answers else {}
        return web.json_response({**answer, "chat_id": chat_id})

    app = web.Application()
    app.router.add_post("/telegram/webhook", webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    sandbox = SandboxBotApi(token=sandbox_token(), idle_quiet=0.05)
    await sandbox.start()
    try:
        await sandbox.set_webhook_targets([f"http://{host}:{port}/telegram/webhook"])
        async with aiohttp.ClientSession() as session:
            set_webhook = f"{sandbox.url}/bot{sandbox.token}/setWebhook"
            async with session.post(set_webhook, json={"url": "https://example.com/wh"}) as done:
                assert done.status == 200
        user = await sandbox.add_user(first_name="Ana")

        answers.append({"method": "sendMessage", "text": "<b>hi</b>", "parse_mode": "HTML"})
        replied = await sandbox.wait_for_reply(await sandbox.user_sends(user.id, "hello"))
        assert [m.text for m in replied] == ["hi"]

        # A mistake in the answer is Telegram's error, as for any call; the bot never hears.
        answers.append({"method": "sendMessage", "text": ""})
        answers.append({"method": "sendMessage", "text": "x", "no_such_field": 1})
        for _ in range(2):
            action = await sandbox.user_sends(user.id, "again")
            await sandbox.wait_for_event(
                lambda e: e.kind == EventKind.API_ERROR, since=action.seq, timeout=5
            )
        assert len(sandbox.api_errors()) == 2

        # A plain "ok" (or JSON without a method) asks for nothing.
        action = await sandbox.user_sends(user.id, "third")
        await sandbox.wait_idle(user.id)
        assert sandbox.messages_since(user.id, action.seq) == []
    finally:
        await sandbox.stop()
        await runner.cleanup()
