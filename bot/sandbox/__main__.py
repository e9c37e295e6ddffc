"""``python -m bot.sandbox``: the sandbox Bot API on its own; the first line printed is its URL."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from bot.sandbox.server import DEFAULT_TOKEN, SandboxBotApi


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot.sandbox",
        description="Local Telegram Bot API sandbox (loopback only, state in memory).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--bot-username", default="travelbot_sandbox_bot")
    parser.add_argument("--per-chat-burst", type=int, default=20)
    parser.add_argument("--per-chat-rate", type=float, default=1.0)
    parser.add_argument("--overall-burst", type=int, default=50)
    parser.add_argument("--overall-rate", type=float, default=30.0)
    parser.add_argument("--no-rate-limits", action="store_true")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    sandbox = SandboxBotApi(
        token=args.token,
        bot_username=args.bot_username,
        per_chat_burst=args.per_chat_burst,
        per_chat_rate=args.per_chat_rate,
        overall_burst=args.overall_burst,
        overall_rate=args.overall_rate,
        rate_limits=not args.no_rate_limits,
    )
    url = await sandbox.start(args.host, args.port)
    sys.stdout.write(f"{url}\n")
    sys.stdout.flush()
    logging.getLogger(__name__).info(
        "point the bot at base_url=%s/bot with token %s; control routes under %s/sandbox/",
        url,
        args.token,
        url,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await sandbox.stop()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_serve(_arguments(argv)))


if __name__ == "__main__":
    main()
