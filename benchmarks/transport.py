"""Client CPU per HTTP request, many in flight: why Bot API calls and Supabase requests go over
aiohttp rather than httpx's own pool.

Run from the project root:

    uv run python -m benchmarks.transport [--requests 5000] [--concurrency 40]

A child process serves a small JSON answer on loopback (so its CPU is not counted); this process
sends ``--requests`` requests, ``--concurrency`` at a time, through each client and prints the
CPU it spent per request and the requests per second:

- ``httpx``: a default ``httpx.AsyncClient`` (what supabase-py would use, and PTB's
  ``HTTPXRequest`` underneath);
- ``httpx on aiohttp``: the same client on ``httpx_aiohttp.AiohttpTransport`` (our Supabase
  storage);
- ``PTB HTTPXRequest`` and ``AiohttpRequest``: a PTB ``Bot`` sending messages through PTB's
  default transport and through ours (``bot.telegram_http``).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport
from telegram import Bot
from telegram.request import BaseRequest, HTTPXRequest

from bot.telegram_http import AiohttpRequest

TOKEN = "123456:transport-benchmark-token"
MESSAGE = {"message_id": 1, "date": 0, "chat": {"id": 7, "type": "private"}, "text": "hi"}


async def serve() -> None:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        if request.match_info["method"] == "getMe":
            return web.json_response(
                {"ok": True, "result": {"id": 123456, "is_bot": True, "first_name": "T"}}
            )
        return web.json_response({"ok": True, "result": MESSAGE})

    app = web.Application()
    app.router.add_route("*", "/bot{token}/{method}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


async def timed(send: Callable[[], Awaitable[object]], requests: int, concurrency: int) -> str:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await send()

    await asyncio.gather(*(one() for _ in range(min(500, requests))))  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return f"{cpu / requests * 1e6:6.0f} µs CPU per request, {requests / wall:6.0f} requests/s"


async def main(args: argparse.Namespace, port: int) -> None:
    url = f"http://127.0.0.1:{port}/bot{TOKEN}/getProfile"
    print(f"{args.requests} requests, {args.concurrency} in flight:")
    for name, client in (
        ("httpx", httpx.AsyncClient()),
        ("httpx on aiohttp", httpx.AsyncClient(transport=AiohttpTransport())),
    ):
        async with client:

            async def get(client: httpx.AsyncClient = client) -> object:
                return (await client.get(url, params={"id": "eq.7"})).json()

            print(f"  {name:<18} {await timed(get, args.requests, args.concurrency)}")
    requests: list[tuple[str, BaseRequest]] = [
        ("PTB HTTPXRequest", HTTPXRequest()),
        ("AiohttpRequest", AiohttpRequest()),
    ]
    for name, request in requests:
        async with Bot(TOKEN, base_url=f"http://127.0.0.1:{port}/bot", request=request) as bot:

            async def send(bot: Bot = bot) -> object:
                return await bot.send_message(7, "hi")

            print(f"  {name:<18} {await timed(send, args.requests, args.concurrency)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transport", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        asyncio.run(serve())
    else:
        server = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.transport", "--serve"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            asyncio.run(main(options, int(server.stdout.readline())))
        finally:
            server.terminate()
            server.wait()
