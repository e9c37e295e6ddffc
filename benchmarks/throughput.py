"""Webhook throughput: the travel bot against a bare PTB echo bot, on the same harness.

Run from the project root (Redis must be up; keys go under a random prefix, deleted after):

    uv run python -m benchmarks.throughput [--travellers 100] [--rounds 5]
                                           [--memory-travellers 10000]
                                           [--echo-transport httpx|aiohttp]
                                           [--redis redis://127.0.0.1:6379/0] [--tracemalloc]
                                           [--by-step] [--profile FILE]

This process is the worker: the real composition root (``open_runtime``: Redis state, SQLite in a
temporary folder, demo fares, sandbox checkout) behind the real aiohttp app (``bot.web.init_app``)
on a loopback port. A second process plays Telegram: a lean Bot API stand-in that answers every
call the bot makes and remembers each chat's newest buttons, plus the driver that posts updates
to ``POST /telegram/webhook`` with the secret header, one traveller's updates in order, up to
``--travellers`` travellers at once. Each traveller books a flight from ``/start`` to the payment
link (the happy path the tests play, tests/support/happy_path.py: 12 updates, one of which
searches) and ends with ``/cancel``.

Why a stand-in and not the sandbox: the sandbox checks every call against the Bot API spec,
renders HTML and keeps every chat and an event log, which is what correctness tests need (the
end-to-end tests use it) but would cost more CPU than the bot itself at these rates. The
stand-in lives in its own process, so neither the bot's nor the baseline's figures include it.

Outgoing rate limiting: in production PTB's ``AIORateLimiter`` holds sends to Telegram's
~30 messages/s per bot. That is Telegram's ceiling, not the worker's capacity, and it would cap
both bots at the same figure, so both run with the same pass-through limiter (no throttle,
RetryAfter handling kept).

Both bots stay up for the whole run and are timed in ``--rounds`` rounds. A round times each bot
twice, in the order travel, echo, echo, travel (each timed run after a short untimed one), and
compares the totals: on a shared machine the CPU a process gets drifts by tens of percent within
a minute, and a bot's first updates after a pause cost more, so both must weigh on the two bots
alike. The median round is judged.

Printed, for each round: both bots' updates/s, the worker CPU per update of each timed run, and
the ratio. Then, for the median round: updates/s; p50/p99 handling latency (server side: request
in to answer out, which includes the engine turn and the Bot API calls, because the webhook
answers after handling) for updates that do not search and for searches; state-store round trips
per update (from ``RedisStateStore.round_trips``: exact per kind from a one-at-a-time pass, and
the average under load); the same for the echo bot, and the ratio. Then the worker's memory
growth over ``--memory-travellers`` distinct travellers after a warm-up, each of whom also pays
on the sandbox checkout page (RSS once collected and trimmed, see ``memory_growth``; tracemalloc
too with ``--tracemalloc``, slower). Targets: ratio >= 0.7, <= 2 round trips per non-search
update, < 5 MB growth.
"""

from __future__ import annotations

import _sqlite3
import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import gc
import html
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiohttp import web

from tests.support.happy_path import Move, booking_script

TOKEN = "555000111:BENCH-throughput-token-not-a-secret"
BOT_ID = 555000111
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
KIND_HEADER = "X-Bench-Kind"
STEP_HEADER = "X-Bench-Step"
FIRST_TRAVELLER = 300_000_000

# --------------------------------------------------------------------------------------------
# The travellers' scripts
# --------------------------------------------------------------------------------------------


def travel_script(departure: date) -> list[Move]:
    """The happy path the tests play (tests/support/happy_path.py), then /cancel."""
    return [*booking_script(departure), Move(text="/cancel", expect="Cancelled")]


def echo_script(length: int) -> list[Move]:
    return [Move(text=f"hello {n}", expect=f"hello {n}") for n in range(length)]


# Replies that mean the bot could not do its job: a benchmark run with any of them is void.
FAILURE_REPLIES = ("temporarily unavailable", "something went wrong", "Still working on")

# --------------------------------------------------------------------------------------------
# The Telegram side (its own process): Bot API stand-in and driver
# --------------------------------------------------------------------------------------------


@dataclass
class ChatLog:
    """What the bot showed one chat lately: enough to press its buttons."""

    next_message_id: int = 1
    replies: list[str] = field(default_factory=list)
    keyboards: deque[tuple[int, list[tuple[str, str]]]] = field(
        default_factory=lambda: deque(maxlen=4)
    )
    links: deque[str] = field(default_factory=lambda: deque(maxlen=4))

    def new_id(self) -> int:
        self.next_message_id += 1
        return self.next_message_id


def _buttons(markup: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, callback data) of the callback buttons, and the links of the link buttons."""
    if isinstance(markup, str):
        markup = json.loads(markup)
    if not isinstance(markup, dict):
        return [], []
    rows = markup.get("inline_keyboard", [])
    pressable = [
        (str(button["text"]), str(button["callback_data"]))
        for row in rows
        for button in row
        if "callback_data" in button
    ]
    links = [str(button["url"]) for row in rows for button in row if "url" in button]
    return pressable, links


class TelegramSide:
    """Answers the Bot API calls a bot makes, and drives travellers through its webhook."""

    def __init__(self) -> None:
        self.chats: dict[int, ChatLog] = {}
        self.calls = 0
        self.bot = {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Bench Bot",
            "username": "bench_bot",
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self.bot_api)
        app.router.add_post("/bench/run", self.run)
        return app

    async def bot_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls += 1
        if request.content_type == "application/json":
            params: dict[str, Any] = await request.json()
        else:
            params = dict(await request.post())
        result: Any = True
        if method == "getMe":
            result = self.bot
        elif method in {"sendMessage", "sendDocument", "editMessageText", "editMessageReplyMarkup"}:
            chat_id = int(params["chat_id"])
            log = self.chats.setdefault(chat_id, ChatLog())
            message_id = int(params["message_id"]) if "message_id" in params else log.new_id()
            text = str(params.get("text", ""))
            log.replies.append(text)
            buttons, links = _buttons(params.get("reply_markup"))
            if buttons:
                log.keyboards.append((message_id, buttons))
            log.links.extend(links)
            result = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private", "first_name": "Traveller"},
                "from": self.bot,
                "text": text,
            }
        elif method == "getMyCommands":
            result = []
        return web.json_response({"ok": True, "result": result})

    async def run(self, request: web.Request) -> web.Response:
        order = await request.json()
        script = (
            travel_script(date.fromisoformat(order["departure"]))
            if order["script"] == "travel"
            else echo_script(int(order["length"]))
        )
        report = await self.drive(
            order["webhook"],
            order["secret"],
            script,
            first=int(order["first"]),
            travellers=int(order["travellers"]),
            concurrency=int(order["concurrency"]),
            pay=bool(order["pay"]),
        )
        return web.json_response(report)

    async def drive(
        self,
        webhook: str,
        secret: str,
        script: list[Move],
        *,
        first: int,
        travellers: int,
        concurrency: int,
        pay: bool,
    ) -> dict[str, Any]:
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []
        updates = 0
        calls_before = self.calls
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def traveller(user_id: int) -> None:
                nonlocal updates
                async with gate:
                    for number, step in enumerate(script):
                        problem = await self._step(session, webhook, secret, user_id, number, step)
                        updates += 1
                        if problem is None and pay and step.checkout:
                            problem = await self._pay(session, user_id)
                        if problem:
                            failures.append(f"traveller {user_id} step {number}: {problem}")
                            break
                    self.chats.pop(user_id, None)

            started = time.perf_counter()
            await asyncio.gather(*(traveller(first + n) for n in range(travellers)))
            elapsed = time.perf_counter() - started
        return {
            "updates": updates,
            "elapsed": elapsed,
            "calls": self.calls - calls_before,
            "failures": failures[:20],
        }

    async def _step(
        self,
        session: aiohttp.ClientSession,
        webhook: str,
        secret: str,
        user_id: int,
        number: int,
        step: Move,
    ) -> str | None:
        log = self.chats.setdefault(user_id, ChatLog())
        user = {"id": user_id, "is_bot": False, "first_name": "Traveller", "language_code": "en"}
        chat = {"id": user_id, "type": "private", "first_name": "Traveller"}
        update_id = user_id * 100 + number
        if step.press is not None:
            found = next(
                (
                    (message_id, data)
                    for message_id, buttons in reversed(log.keyboards)
                    for label, data in buttons
                    if step.press in label
                ),
                None,
            )
            if found is None:
                return f"no button {step.press!r}; last replies: {log.replies[-2:]}"
            message_id, data = found
            update: dict[str, Any] = {
                "update_id": update_id,
                "callback_query": {
                    "id": str(update_id),
                    "from": user,
                    "chat_instance": str(user_id),
                    "data": data,
                    "message": {
                        "message_id": message_id,
                        "date": int(time.time()),
                        "chat": chat,
                        "text": "…",
                    },
                },
            }
        else:
            assert step.text is not None
            message: dict[str, Any] = {
                "message_id": log.new_id(),
                "date": int(time.time()),
                "chat": chat,
                "from": user,
                "text": step.text,
            }
            if step.text.startswith("/"):
                command = step.text.split()[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
            update = {"update_id": update_id, "message": message}
        log.replies.clear()
        headers = {
            SECRET_HEADER: secret,
            KIND_HEADER: "search" if step.search else "other",
            STEP_HEADER: f"{number:02d} {step.text or step.press}",
        }
        async with session.post(webhook, json=update, headers=headers) as response:
            await response.read()
            if response.status != 200:
                return f"webhook answered {response.status}"
        said = html.unescape(re.sub(r"<[^>]+>", "", "\n".join(log.replies)))
        if any(failure in said for failure in FAILURE_REPLIES):
            return f"the bot said: {said[:120]!r}"
        if step.expect and step.expect not in said:
            return f"expected {step.expect!r}, the bot said: {said[:160]!r}"
        if not said and step.press is None:
            return "no reply"
        return None

    async def _pay(self, session: aiohttp.ClientSession, user_id: int) -> str | None:
        """Pay on the bot's sandbox checkout page, as the traveller's browser would."""
        log = self.chats[user_id]
        link = next((url for url in reversed(log.links) if "/checkout/sandbox/" in url), None)
        if link is None:
            return "no payment link"
        log.replies.clear()
        async with session.post(f"{link}/pay") as response:
            await response.read()
            if response.status != 200:
                return f"the checkout page answered {response.status}"
        if not any("confirmed" in reply.lower() for reply in log.replies):
            return f"no confirmation after paying: {log.replies!r}"
        return None


async def serve_telegram_side() -> None:
    runner = web.AppRunner(TelegramSide().app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"http://{host}:{port}", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


# --------------------------------------------------------------------------------------------
# The worker side (this process)
# --------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """Server-side figures of the webhook route, per kind of update."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    round_trips: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_step: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    enabled: bool = True  # off for the memory run, whose samples would be growth of our own

    def clear(self) -> None:
        self.latencies.clear()
        self.round_trips.clear()
        self.by_step.clear()


def measuring(measured: Measured, trips: Callable[[], int]) -> Any:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path != "/telegram/webhook" or not measured.enabled:
            return await handler(request)
        kind = request.headers.get(KIND_HEADER, "other")
        before = trips()
        started = time.perf_counter()
        response = await handler(request)
        measured.latencies[kind].append(time.perf_counter() - started)
        measured.by_step[request.headers.get(STEP_HEADER, "?")].append(
            time.perf_counter() - started
        )
        measured.round_trips[kind].append(trips() - before)
        return response

    return middleware


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sqlite_heap_bytes() -> int:
    """SQLite's own heap in this process (mostly page cache, bounded by ``cache_size``).

    Reported beside RSS so that a filling page cache is not mistaken for a leak of ours;
    0 where the library's counter cannot be reached."""
    try:
        library = ctypes.CDLL(_sqlite3.__file__)
        memory_used = library.sqlite3_memory_used
    except (OSError, AttributeError):
        return 0
    memory_used.restype = ctypes.c_int64
    return int(memory_used())


def settled_rss() -> int:
    """RSS once garbage is collected and glibc has handed its free heap pages back."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS as it is
        ctypes.CDLL(None).malloc_trim(0)
    return rss_bytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def telegram_side() -> AsyncIterator[str]:
    process = subprocess.Popen(  # noqa: ASYNC220 - one child for the whole run
        [sys.executable, "-m", "benchmarks.throughput", "--telegram-side"],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        if not line:
            raise RuntimeError("the Telegram side did not start")
        yield line.decode().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@dataclass
class Bench:
    """How to reach the Telegram side, and the order it runs."""

    telegram: str
    secret: str
    concurrency: int
    departure: date
    next_traveller: int = FIRST_TRAVELLER

    async def run(
        self,
        webhook: str,
        *,
        script: str,
        travellers: int,
        length: int = 0,
        concurrency: int | None = None,
        pay: bool = False,
    ) -> dict[str, Any]:
        order = {
            "webhook": webhook,
            "secret": self.secret,
            "script": script,
            "length": length,
            "departure": self.departure.isoformat(),
            "first": self.next_traveller,
            "travellers": travellers,
            "concurrency": min(concurrency or self.concurrency, travellers),
            "pay": pay,
        }
        self.next_traveller += travellers  # every traveller is someone new
        timeout = aiohttp.ClientTimeout(total=None)
        cpu = time.process_time()
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{self.telegram}/bench/run", json=order) as response,
        ):
            response.raise_for_status()
            report: dict[str, Any] = await response.json()
        report["worker_cpu"] = time.process_time() - cpu
        if report["failures"]:
            raise SystemExit("travellers failed:\n  " + "\n  ".join(report["failures"]))
        return report


def _joined(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict[str, list[float]]:
    return {key: a.get(key, []) + b.get(key, []) for key in a.keys() | b.keys()}


def pass_through_limiter() -> Any:
    from telegram.ext import AIORateLimiter

    return AIORateLimiter(overall_max_rate=0, group_max_rate=0, max_retries=3)


@dataclass
class Result:
    name: str
    report: dict[str, Any]
    latencies: dict[str, list[float]]
    by_step: dict[str, list[float]] = field(default_factory=dict)
    trips_exact: dict[str, float] = field(default_factory=dict)
    trips_under_load: float | None = None

    def __add__(self, other: Result) -> Result:
        """Two timed runs of the same bot as one."""
        report = {
            key: self.report[key] + other.report[key]
            for key in ("updates", "elapsed", "calls", "worker_cpu")
        }
        return Result(
            name=self.name,
            report=report,
            latencies=_joined(self.latencies, other.latencies),
            by_step=_joined(self.by_step, other.by_step),
            trips_under_load=None
            if self.trips_under_load is None or other.trips_under_load is None
            else (self.trips_under_load + other.trips_under_load) / 2,
        )

    @property
    def updates_per_second(self) -> float:
        return float(self.report["updates"] / self.report["elapsed"])

    @property
    def cpu_per_update(self) -> float:
        """Worker CPU seconds per update: what the worker can sustain per core, whatever else
        the machine (the Telegram side, Redis, other jobs) spends its CPU on."""
        return float(self.report["worker_cpu"] / self.report["updates"])

    def print(self) -> None:
        print(f"\n{self.name}")
        print(f"  throughput            {self.updates_per_second:8.1f} updates/s")
        print(
            f"  worker CPU            {self.cpu_per_update * 1000:8.3f} ms per update"
            f" (= {1 / self.cpu_per_update:.0f} updates per CPU-second)"
        )
        print(
            f"  Bot API calls         {self.report['calls'] / self.report['updates']:8.2f} per update"
        )
        for kind, samples in sorted(self.latencies.items()):
            label = "searching updates" if kind == "search" else "non-search updates"
            ms = [s * 1000 for s in samples]
            print(
                f"  {label:<21} p50 {percentile(ms, 0.5):7.2f} ms   p99 {percentile(ms, 0.99):7.2f}"
                f" ms   mean {statistics.fmean(ms):7.2f} ms   n={len(ms)}"
            )
        for kind, trips in sorted(self.trips_exact.items()):
            label = "searching" if kind == "search" else "non-search"
            print(f"  state round trips per {label} update, one at a time (max): {trips:.0f}")
        if self.trips_under_load is not None:
            print(f"  state round trips per update under load: {self.trips_under_load:.2f}")
        if self.by_step:
            print("  handling latency by step (p50 / p99 ms):")
            for step, samples in sorted(self.by_step.items()):
                ms = [s * 1000 for s in samples]
                print(f"    {step:<28} {percentile(ms, 0.5):8.2f} {percentile(ms, 0.99):8.2f}")


@dataclass
class Worker:
    """One bot behind its webhook route, ready to be driven; ``measured`` sees its updates."""

    name: str
    webhook: str
    script: str
    measured: Measured
    length: int = 0
    trips: Callable[[], int] | None = None  # state-store round trips so far, if it has one

    async def timed(self, bench: Bench, travellers: int) -> Result:
        """One timed run, after a short untimed one: a bot that sat idle while the other ran
        has let its connections go, and the first updates after a pause cost more."""
        await bench.run(self.webhook, script=self.script, travellers=10, length=self.length)
        self.measured.clear()
        trips_before = self.trips() if self.trips else 0
        report = await bench.run(
            self.webhook, script=self.script, travellers=travellers, length=self.length
        )
        return Result(
            name=self.name,
            report=report,
            # Copies: the lists in ``measured`` go on filling with the next warm-up.
            latencies={kind: list(ms) for kind, ms in self.measured.latencies.items()},
            by_step={step: list(ms) for step, ms in self.measured.by_step.items()},
            trips_under_load=(self.trips() - trips_before) / report["updates"]
            if self.trips
            else None,
        )


@contextlib.asynccontextmanager
async def travel_worker(
    bench: Bench, args: argparse.Namespace, folder: Path
) -> AsyncIterator[Worker]:
    """The travel bot as ``travelbot webhook`` runs it, warmed up."""
    from bot.bootstrap import open_runtime, settle_heap
    from bot.config import load_settings
    from bot.web import init_app, start_site
    from conversations.state_redis import RedisStateStore

    port = free_port()
    prefix = f"bench-{secrets.token_hex(6)}"
    settings = load_settings(
        telegram_bot_token=TOKEN,
        telegram_api_base_url=bench.telegram,
        telegram_webhook_url=f"http://127.0.0.1:{port}/telegram/webhook",
        telegram_webhook_secret=bench.secret,
        redis_url=args.redis,
        redis_prefix=prefix,
        sqlite_path=folder / "bench.sqlite3",
        supabase_url=None,
        stripe_secret_key=None,
        public_base_url=None,
        flight_provider="demo",
        admin_user_ids="",
        port=port,
        log_level="WARNING",
    )
    try:
        async with open_runtime(settings) as runtime:
            settle_heap()  # as `travelbot webhook` does once it is up
            store = runtime.adapters.state
            assert isinstance(store, RedisStateStore)
            application = runtime.application
            # See the module docstring: same pass-through limiter as the baseline.
            application.bot._rate_limiter = pass_through_limiter()
            measured = Measured()
            app = init_app(runtime, telegram_webhook_route=True)
            app.middlewares.append(measuring(measured, lambda: store.round_trips))
            runner = await start_site(app, host="127.0.0.1", port=port)
            await application.start()
            worker = Worker(
                name=f"travel bot (2 x {args.travellers} travellers, Redis state, SQLite)",
                webhook=f"http://127.0.0.1:{port}/telegram/webhook",
                script="travel",
                measured=measured,
                trips=lambda: store.round_trips,
            )
            try:
                # Warmed up before the one-at-a-time pass counts round trips: a fresh Redis
                # first loads the scripts, which that pass must not count.
                await bench.run(
                    worker.webhook, script="travel", travellers=min(20, args.travellers)
                )
                yield worker
            finally:
                await runner.cleanup()
                await application.stop()
    finally:
        await delete_prefix(args.redis, prefix)


async def exact_round_trips(bench: Bench, worker: Worker) -> dict[str, float]:
    """State-store round trips per kind of update, one traveller at a time (nothing
    interleaved), the worst seen."""
    worker.measured.clear()
    await bench.run(worker.webhook, script="travel", travellers=2, concurrency=1)
    return {kind: float(max(trips)) for kind, trips in worker.measured.round_trips.items()}


async def memory_growth(bench: Bench, webhook: str, args: argparse.Namespace) -> dict[str, float]:
    """The worker's growth over ``--memory-travellers`` new travellers, after a warm-up.

    These travellers also pay on the sandbox checkout page, as most do within the payment
    window; a run where nobody pays measures a pile of open payment links, not travellers.
    Growth is RSS after a full collection and ``malloc_trim``: glibc keeps freed heap pages for
    reuse, by an amount that follows the peaks of concurrent work rather than how many
    travellers were served, and would otherwise swing the figure by several MB either way.
    RSS before trimming, Python's object count and SQLite's heap are printed beside it."""
    await bench.run(
        webhook, script="travel", travellers=min(1000, args.memory_travellers), pay=True
    )
    if args.tracemalloc:
        tracemalloc.start()
    raw_before = rss_bytes()
    live_before, objects_before = settled_rss(), len(gc.get_objects())
    sqlite_before = sqlite_heap_bytes()
    started = time.perf_counter()
    done = 0
    figures: dict[str, float] = {}
    while done < args.memory_travellers:
        batch = min(2000, args.memory_travellers - done)
        await bench.run(webhook, script="travel", travellers=batch, pay=True)
        done += batch
        untrimmed = rss_bytes() - raw_before  # before this batch's trim
        figures = {
            "travellers": float(done),
            "seconds": time.perf_counter() - started,
            "untrimmed_growth_mb": untrimmed / 2**20,
            "rss_growth_mb": (settled_rss() - live_before) / 2**20,
            "objects_growth": float(len(gc.get_objects()) - objects_before),
            "sqlite_growth_mb": (sqlite_heap_bytes() - sqlite_before) / 2**20,
        }
        print(
            f"  memory run: {done}/{args.memory_travellers} travellers:"
            f" RSS {figures['rss_growth_mb']:+.2f} MB"
            f" (before trimming {figures['untrimmed_growth_mb']:+.2f} MB),"
            f" Python objects {figures['objects_growth']:+.0f},"
            f" SQLite heap {figures['sqlite_growth_mb']:+.2f} MB",
            flush=True,
        )
    if args.tracemalloc:
        current, _ = tracemalloc.get_traced_memory()
        figures["traced_growth_mb"] = current / 2**20
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        print("  largest live allocations made during the memory run:")
        for stat in snapshot.statistics("lineno")[:8]:
            print(f"    {stat}")
    return figures


async def delete_prefix(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        batch: list[Any] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


@dataclass
class _EchoRuntime:
    """What ``bot.web.telegram_webhook`` reads from a runtime, for the echo bot."""

    settings: Any
    application: Any


@contextlib.asynccontextmanager
async def echo_worker(bench: Bench, args: argparse.Namespace, length: int) -> AsyncIterator[Worker]:
    """A bare PTB echo bot behind the very same webhook route."""
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

    from bot.bootstrap import Runtime
    from bot.config import load_settings
    from bot.web import IN_FLIGHT, RUNTIME, UPDATE_GATE, start_site, telegram_webhook
    from bot.web_guard import UpdateGate

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(update.message.text or "")

    builder = (
        ApplicationBuilder()
        .token(TOKEN)
        .base_url(f"{bench.telegram}/bot")
        .rate_limiter(pass_through_limiter())
    )
    if args.echo_transport == "aiohttp":
        from bot.telegram_http import AiohttpRequest

        builder = builder.request(AiohttpRequest())
    application = builder.build()
    application.add_handler(MessageHandler(filters.TEXT, echo))
    await application.initialize()
    port = free_port()
    settings = load_settings(telegram_webhook_secret=bench.secret, port=port)
    measured = Measured()
    app = web.Application(middlewares=[measuring(measured, lambda: 0)])
    app[RUNTIME] = cast(Runtime, _EchoRuntime(settings=settings, application=application))
    app[IN_FLIGHT] = set()
    app[UPDATE_GATE] = UpdateGate(64)
    app.router.add_post("/telegram/webhook", telegram_webhook)
    runner = await start_site(app, host="127.0.0.1", port=port)
    await application.start()
    worker = Worker(
        name=(
            f"bare PTB echo bot, {args.echo_transport} transport"
            f" (2 x {args.travellers} travellers x {length} messages)"
        ),
        webhook=f"http://127.0.0.1:{port}/telegram/webhook",
        script="echo",
        measured=measured,
        length=length,
    )
    try:
        yield worker  # warmed up by each timed run
    finally:
        await runner.cleanup()
        await application.stop()
        await application.shutdown()


async def main(args: argparse.Namespace) -> int:
    length = len(travel_script(date.today()))
    rounds: list[tuple[Result, Result]] = []
    # Timed in this thread's CPU: on a shared machine wall time counts other jobs too.
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    memory = None
    async with telegram_side() as telegram:
        bench = Bench(
            telegram=telegram,
            secret=secrets.token_urlsafe(24),
            concurrency=args.concurrency,
            departure=date.today() + timedelta(days=60),
        )
        with tempfile.TemporaryDirectory(prefix="travelbot-bench-") as folder:
            async with (
                travel_worker(bench, args, Path(folder)) as travel,
                echo_worker(bench, args, length) as echo,
            ):
                trips_exact = await exact_round_trips(bench, travel)
                # A round times each bot twice, in the order travel, echo, echo, travel, and
                # compares their totals: a machine that speeds up or slows down during the round
                # (other jobs, CPU frequency), and whatever running second does to a bot, weigh
                # on both alike.
                for number in range(args.rounds):
                    with profiling(profiler):
                        travel_first = await travel.timed(bench, args.travellers)
                    echo_first = await echo.timed(bench, args.travellers)
                    echo_second = await echo.timed(bench, args.travellers)
                    with profiling(profiler):
                        travel_second = await travel.timed(bench, args.travellers)
                    pair = (travel_first + travel_second, echo_first + echo_second)
                    rounds.append(pair)
                    print(
                        f"  round {number + 1}/{args.rounds}: travel"
                        f" {pair[0].updates_per_second:6.1f} updates/s"
                        f" ({travel_first.cpu_per_update * 1000:.2f} and"
                        f" {travel_second.cpu_per_update * 1000:.2f} ms CPU each), echo"
                        f" {pair[1].updates_per_second:6.1f} updates/s"
                        f" ({echo_first.cpu_per_update * 1000:.2f} and"
                        f" {echo_second.cpu_per_update * 1000:.2f} ms CPU each), ratio"
                        f" {ratio_of(pair):.2f}",
                        flush=True,
                    )
                if args.memory_travellers:
                    travel.measured.enabled = False
                    memory = await memory_growth(bench, travel.webhook, args)

    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"  profile of the travel bot's timed runs: {args.profile}", flush=True)

    # The round with the median ratio is printed in full; the target applies to it.
    ordered = sorted(rounds, key=ratio_of)
    travel_result, echo_result = ordered[(len(ordered) - 1) // 2]
    travel_result.trips_exact = trips_exact
    if not args.by_step:
        travel_result.by_step = echo_result.by_step = {}
    travel_result.print()
    echo_result.print()
    ratio = ratio_of((travel_result, echo_result))
    cpu_ratio = echo_result.cpu_per_update / travel_result.cpu_per_update
    print(
        f"\nratio travel/echo in each round: {', '.join(f'{ratio_of(r):.2f}' for r in rounds)}"
        f"\nmedian round: {ratio:.2f} in updates/s, {cpu_ratio:.2f} in updates per worker"
        " CPU-second"
    )
    non_search_trips = trips_exact.get("other", 0.0)
    checks = [
        (f"throughput ratio travel/echo = {ratio:.2f} (median round)", ratio >= 0.7, ">= 0.7"),
        (
            f"state round trips per non-search update = {non_search_trips:.0f} (max)",
            non_search_trips <= 2,
            "<= 2",
        ),
    ]
    if memory is not None:
        print(
            f"\nworker memory over {memory['travellers']:.0f} new travellers"
            f" ({memory['seconds']:.0f} s): RSS {memory['rss_growth_mb']:+.2f} MB"
            f" (before trimming {memory['untrimmed_growth_mb']:+.2f} MB),"
            f" Python objects {memory['objects_growth']:+.0f},"
            f" SQLite heap {memory['sqlite_growth_mb']:+.2f} MB"
            + (
                f", traced {memory['traced_growth_mb']:+.2f} MB"
                if "traced_growth_mb" in memory
                else ""
            )
        )
        growth = max(memory["rss_growth_mb"], memory.get("traced_growth_mb", 0.0))
        checks.append((f"memory growth = {growth:.2f} MB", growth < 5, "< 5 MB"))
    print()
    for text, ok, target in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {text}   (target {target})")
    return 0 if all(ok for _, ok, _ in checks) else 1


@contextlib.contextmanager
def profiling(profiler: cProfile.Profile | None) -> Iterator[None]:
    """Profile what the loop runs meanwhile: only the travel bot is driven then."""
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


def ratio_of(pair: tuple[Result, Result]) -> float:
    """Travel updates/s over echo updates/s."""
    return pair[0].updates_per_second / pair[1].updates_per_second


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__)
    parser.add_argument("--travellers", type=int, default=100, help="travellers in each timed run")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=40,
        help="updates in flight at once (Telegram's default webhook max_connections is 40)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="timed rounds of each bot, alternating which goes first (the median is judged)",
    )
    parser.add_argument(
        "--memory-travellers",
        type=int,
        default=10_000,
        help="new travellers for the memory check (0 skips it)",
    )
    parser.add_argument("--tracemalloc", action="store_true", help="also trace allocations")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="write a cProfile (pstats) file of the travel bot's timed runs, event loop thread"
        " only; profiling slows the travel bot, so read its ratio and CPU figures as void",
    )
    parser.add_argument(
        "--by-step", action="store_true", help="print the travel bot's latency for each step"
    )
    parser.add_argument(
        "--echo-transport",
        choices=("httpx", "aiohttp"),
        default="httpx",
        help="the echo bot's Bot API transport: PTB's default (httpx), or the travel bot's",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--telegram-side", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    return options


if __name__ == "__main__":
    options = arguments()
    if options.telegram_side:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_telegram_side())
    else:
        os.environ.setdefault("PTB_TIMEDELTA", "true")
        sys.exit(asyncio.run(main(options)))
