"""Redis for tests: the real server at 127.0.0.1:6379, a key prefix of one's own, and outages.

Several test runs share that server at once, so every test gets a random key prefix
(``redis_prefix``) and everything under it is deleted afterwards. ``redis_proxy`` puts a TCP
relay in front of Redis that a test can take down, stall or bring back, to show what users see
when Redis goes away without stopping the server everyone else is using.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", f"redis://{REDIS_HOST}:{REDIS_PORT}/0")


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test (or other person's run) uses; its keys go after the test."""
    return f"test-{secrets.token_hex(6)}"


async def delete_prefixed(client: Redis, prefix: str) -> int:
    """Delete every key under ``prefix:``; returns how many there were."""
    deleted = 0
    batch: list[Any] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += await client.delete(*batch)
            batch.clear()
    if batch:
        deleted += await client.delete(*batch)
    return deleted


@pytest_asyncio.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[Redis]:
    """A client on the shared server; keys under ``redis_prefix`` are removed after the test."""
    client = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        yield client
    finally:
        await delete_prefixed(client, redis_prefix)
        await client.aclose()


class WireCounter:
    """Counts what a client writes to Redis: one write per command, pipeline or script call."""

    def __init__(self) -> None:
        self.writes = 0


def counting_client(url: str, counter: WireCounter) -> Redis:
    """A client whose every socket write is counted in ``counter``: an independent check on
    what code under test claims about its round trips."""

    class CountingConnection(Connection):
        async def send_packed_command(
            self, command: bytes | str | Iterable[bytes], check_health: bool = True
        ) -> None:
            counter.writes += 1
            await super().send_packed_command(command, check_health)

    pool = ConnectionPool.from_url(
        url,
        connection_class=CountingConnection,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)


class RedisProxy:
    """A TCP relay on 127.0.0.1 in front of Redis, with a switch for outages.

    ``stop()`` closes the listener and cuts every open connection (a crashed or restarted
    Redis); ``start()`` listens again on the same port; ``stall()`` accepts connections and
    reads commands but never answers (a hung server or a network black hole).
    """

    def __init__(self, target_host: str = REDIS_HOST, target_port: int = REDIS_PORT) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stalled = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._stalled = False
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._cut()
        if server is not None:
            await server.wait_closed()

    async def stall(self) -> None:
        """Keep listening, but let nothing through in either direction from now on."""
        await self.start()
        self._stalled = True
        await self._cut()

    async def _cut(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._transports.add(client_w.transport)
        if self._stalled:
            self._spawn(_drain_forever(client_r, client_w))
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.transport.abort()
            return
        self._transports.add(upstream_w.transport)
        self._spawn(_pipe(client_r, upstream_w))
        self._spawn(_pipe(upstream_r, client_w))

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    sink.transport.abort()


async def _drain_forever(source: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Swallow what the client sends. Holding ``writer`` until the connection is gone keeps
    Python 3.13 from collecting it while its socket is open (an 'unclosed' ResourceWarning)."""
    try:
        with contextlib.suppress(OSError):
            while await source.read(65536):
                pass
    finally:
        writer.transport.abort()


@pytest_asyncio.fixture
async def redis_proxy() -> AsyncIterator[RedisProxy]:
    """A running relay to the real Redis; see ``RedisProxy`` for the outage switches."""
    proxy = RedisProxy()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
