"""Broadcast delivery: how long N users take, against the sandbox's Telegram limits.

Run from the project root:
    uv run python -m benchmarks.broadcast [--users 1000] [--rate 25] [--lanes 4] [--kill-at 0.4]

The real PTB Application (with its AIORateLimiter) sends through the sandbox Bot API, which
answers 429 as Telegram does past ~30 messages a second; storage is a SQLite file. With
``--kill-at`` the worker is stopped hard (its tasks cancelled mid-send, nothing cleaned up) at
that share of the deliveries, the runtime is closed and a new one started on the same file,
which resumes the broadcast as after a crash. Prints the duration, messages a second, 429s,
and how many users got the message once, twice or not at all. The floor at Telegram's limit
is users / 30 s (about 33 s for 1,000).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

from bot.bootstrap import open_runtime
from bot.config import load_settings
from bot.sandbox import DEFAULT_TOKEN, EventKind, SandboxBotApi, SandboxEvent
from handlers.telegram import TelegramNotifier
from services.broadcast import DEFAULT_LANES, DEFAULT_RATE, BroadcastWorker
from services.models import BroadcastStatus

ADMIN = 1_000_001
FIRST_USER = 2_000_001
TEXT = "Benchmark broadcast: spring fares are out."


async def _seed(sandbox: SandboxBotApi, path: Path, users: int) -> list[int]:
    from services.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(path)
    await storage.start()
    ids = list(range(FIRST_USER, FIRST_USER + users))
    try:
        for user_id in ids:
            await storage.upsert_profile(user_id, first_name="Traveller")
    finally:
        await storage.close()
    await sandbox.add_user(ADMIN, "Ada")
    await sandbox.user_sends(ADMIN, "/start")
    for user_id in ids:
        await sandbox.add_user(user_id, "Traveller")
        await sandbox.user_sends(user_id, "/start")
    return ids


async def _run(users: int, rate: float, lanes: int, kill_at: float) -> None:
    with tempfile.TemporaryDirectory(prefix="travelbot-bench-") as folder:
        path = Path(folder) / "bot.sqlite3"
        settings = load_settings(
            sqlite_path=path,
            admin_user_ids=str(ADMIN),
            redis_url=None,
            supabase_url=None,
            stripe_secret_key=None,
            stripe_webhook_secret=None,
            log_level="WARNING",
        )
        async with SandboxBotApi() as sandbox:
            ids = await _seed(sandbox, path, users)
            copies: Counter[int] = Counter()
            reached_kill = asyncio.Event()

            def count(event: SandboxEvent) -> None:
                message = event.message
                if event.kind is not EventKind.BOT_MESSAGE or message is None:
                    return
                if message.text == TEXT and event.chat_id is not None:
                    copies[event.chat_id] += 1
                    if kill_at and sum(copies.values()) >= int(users * kill_at):
                        reached_kill.set()

            sandbox.add_listener(count)
            started = time.monotonic()
            killed_after = 0
            broadcast_id = 0
            current = None
            counts: dict[str, int] = {}
            for attempt in (1, 2):
                async with open_runtime(
                    settings, token=DEFAULT_TOKEN, telegram_base_url=sandbox.url
                ) as runtime:
                    assert runtime.broadcasts is not None
                    # The runtime's own worker (it resumes at start-up) makes way for ours,
                    # tuned by the options; it finishes the message in hand first.
                    await runtime.broadcasts.stop()
                    worker = BroadcastWorker(
                        runtime.adapters.storage,
                        TelegramNotifier(runtime.application),
                        rate=rate,
                        lanes=lanes,
                    )
                    if attempt == 1:
                        broadcast = await worker.create(ADMIN, TEXT)
                        broadcast_id = broadcast.id
                    else:
                        await worker.start()
                    if attempt == 1 and kill_at:
                        await reached_kill.wait()
                        killed_after = sum(copies.values())
                        await worker.stop(grace=0)  # as abrupt as a crash, in-process
                        continue
                    await worker.wait(broadcast_id)
                    current = await runtime.adapters.storage.get_broadcast(broadcast_id)
                    counts = await runtime.adapters.storage.broadcast_counts(broadcast_id)
                    break
            duration = time.monotonic() - started
            too_many = [e for e in sandbox.api_errors() if "Too Many" in (e.error or "")]
            recipients = ids
            histogram = Counter(copies[user] for user in recipients)
            print(f"users                 {len(recipients)}")
            print(f"pace                  {rate:g}/s, {lanes} lanes")
            if kill_at:
                print(
                    f"stopped hard after    {killed_after} ({killed_after / len(recipients):.0%})"
                )
            print(
                f"duration              {duration:.1f} s ({len(recipients) / duration:.1f} msg/s)"
            )
            print(f"floor at 30/s         {len(recipients) / 30:.1f} s")
            print(f"429 answers           {len(too_many)}")
            print(f"copies per user       {dict(sorted(histogram.items()))}")
            print(f"delivery rows         {counts}")
            status = current.status.value if current else "missing"
            print(f"broadcast status      {status}")
            if current is None or current.status is not BroadcastStatus.DONE:
                raise SystemExit("the broadcast did not finish")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE)
    parser.add_argument("--lanes", type=int, default=DEFAULT_LANES)
    parser.add_argument("--kill-at", type=float, default=0.0, help="e.g. 0.4; 0 runs through")
    args = parser.parse_args()
    asyncio.run(_run(args.users, args.rate, args.lanes, args.kill_at))


if __name__ == "__main__":
    main()
