"""The conversation state store: one contract for the memory and the Redis adapter, then what
only Redis can show (round trips on the wire, outages) and what only memory must prove (it does
not grow with the number of chats)."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from conversations.state import (
    ChatKey,
    LockTimeoutError,
    RateLimit,
    StateRecord,
    StateStore,
    StateUnavailableError,
)
from conversations.state_memory import MemoryStateStore
from conversations.state_redis import RedisStateStore
from tests.support.redis_db import RedisProxy, WireCounter, counting_client

TTL = 60


def new_chat() -> ChatKey:
    return ChatKey(bot_id=777, chat_id=secrets.randbelow(10**12))


def searching(version: int = 1, **data: object) -> StateRecord:
    return StateRecord(state="search:date", data=dict(data), version=version)


@pytest_asyncio.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, redis_client: Redis, redis_prefix: str
) -> AsyncIterator[StateStore]:
    built: StateStore
    if request.param == "memory":
        built = MemoryStateStore(sweep_interval=0.05)
    else:
        built = RedisStateStore(redis_client, prefix=redis_prefix)
    yield built
    await built.close()


async def save(store: StateStore, key: ChatKey, record: StateRecord, ttl: int = TTL) -> None:
    turn = await store.begin(key, wait=2)
    await store.commit(turn, record, ttl=ttl)


class TestStateStoreContract:
    """What every adapter promises the conversation engine."""

    async def test_a_saved_record_is_what_the_next_turn_reads(self, store: StateStore) -> None:
        chat = new_chat()
        first = await store.begin(chat)
        assert first.record == StateRecord()
        assert first.record.is_empty
        record = StateRecord(
            state="travellers:passport",
            data={"origin": "LIS", "names": ["Zoë", "José"], "pax": {"adults": 2}, "ok": True},
            version=7,
        )
        await store.commit(first, record, ttl=TTL)

        second = await store.begin(chat, wait=0.5)  # the lock was released by commit
        assert second.record == record
        assert second.record.version == 7
        assert second.token != first.token
        await store.release(second)
        assert await store.peek(chat) == record

    async def test_an_empty_record_deletes_the_chat(
        self, store: StateStore, redis_client: Redis
    ) -> None:
        chat = new_chat()
        await save(store, chat, searching())
        await save(store, chat, StateRecord(version=3))
        assert await store.peek(chat) == StateRecord()
        if isinstance(store, RedisStateStore):
            assert await redis_client.exists(chat.state_key(store.prefix)) == 0

    async def test_an_idle_chat_expires_after_its_ttl(self, store: StateStore) -> None:
        chat = new_chat()
        await save(store, chat, searching(), ttl=1)
        assert await store.peek(chat) == searching()
        await asyncio.sleep(1.1)
        assert await store.peek(chat) == StateRecord()
        turn = await store.begin(chat)
        assert turn.record.is_empty
        await store.release(turn)

    async def test_commit_without_a_record_keeps_it_and_renews_its_ttl(
        self, store: StateStore
    ) -> None:
        chat = new_chat()
        await save(store, chat, searching(version=4, origin="LIS"), ttl=1)
        await asyncio.sleep(0.6)
        turn = await store.begin(chat)
        await store.commit(turn, None, ttl=2)
        await asyncio.sleep(0.7)  # past the first TTL, inside the renewed one
        assert await store.peek(chat) == searching(version=4, origin="LIS")
        # Nothing stored: renewing keeps nothing alive and creates nothing.
        empty = new_chat()
        turn = await store.begin(empty)
        await store.commit(turn, None, ttl=TTL)
        assert await store.peek(empty) == StateRecord()

    async def test_the_lock_serializes_turns_on_one_chat(self, store: StateStore) -> None:
        chat = new_chat()
        holder = await store.begin(chat)
        waiter = asyncio.ensure_future(store.begin(chat, wait=3))
        await asyncio.sleep(0.2)
        assert not waiter.done()  # still waiting for the holder
        await store.commit(holder, searching(version=2), ttl=TTL)
        started = time.monotonic()
        second = await waiter
        assert time.monotonic() - started < 0.5  # woken by the release, not by a timeout
        assert second.record == searching(version=2)  # read after the holder wrote
        await store.release(second)

    async def test_concurrent_updates_to_one_chat_are_never_lost(self, store: StateStore) -> None:
        chat = new_chat()

        async def tap() -> None:
            turn = await store.begin(chat, wait=10)
            count = int(turn.record.data.get("taps", 0))
            await asyncio.sleep(0.001)  # a handler doing some work
            await store.commit(turn, searching(version=count + 1, taps=count + 1), ttl=TTL)

        await asyncio.gather(*(tap() for _ in range(25)))
        assert (await store.peek(chat)).data["taps"] == 25

    async def test_other_chats_are_not_blocked_by_a_busy_one(self, store: StateStore) -> None:
        busy, other = new_chat(), new_chat()
        holder = await store.begin(busy)
        started = time.monotonic()
        turn = await store.begin(other, wait=0)
        assert time.monotonic() - started < 0.2
        await store.release(turn)
        await store.release(holder)

    async def test_a_chat_locked_for_too_long_gives_a_lock_timeout(self, store: StateStore) -> None:
        chat = new_chat()
        holder = await store.begin(chat)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError):
            await store.begin(chat, wait=0.3)
        assert 0.25 < time.monotonic() - started < 1.0
        await store.release(holder)

    async def test_a_dead_holders_lock_expires_so_the_chat_is_not_wedged(
        self, store: StateStore
    ) -> None:
        chat = new_chat()
        await save(store, chat, searching(version=5))
        await store.begin(chat, lock_ttl=0.3)  # the worker dies: no commit, no release
        started = time.monotonic()
        turn = await store.begin(chat, wait=3)
        assert 0.15 < time.monotonic() - started < 1.0
        assert turn.record == searching(version=5)
        await store.release(turn)

    async def test_a_stale_commit_writes_nothing_and_leaves_the_new_holder_locked(
        self, store: StateStore
    ) -> None:
        """Decision: a turn whose lock expired and passed to someone else writes nothing (the
        other holder read the record and will write its own) and its commit raises
        ``LockTimeoutError`` so the caller does not send replies for a state never saved."""
        chat = new_chat()
        await save(store, chat, searching(version=1))
        slow = await store.begin(chat, lock_ttl=0.2)
        await asyncio.sleep(0.3)
        fresh = await store.begin(chat, wait=0)
        with pytest.raises(LockTimeoutError):
            await store.commit(slow, searching(version=99), ttl=TTL)
        await store.release(slow)  # no effect either
        assert await store.peek(chat) == searching(version=1)
        with pytest.raises(LockTimeoutError):
            await store.begin(chat, wait=0.1)  # still held by the fresh turn
        await store.commit(fresh, searching(version=2), ttl=TTL)
        assert await store.peek(chat) == searching(version=2)

    async def test_a_commit_after_the_lock_lapsed_writes_nothing(self, store: StateStore) -> None:
        chat = new_chat()
        slow = await store.begin(chat, lock_ttl=0.2)
        await asyncio.sleep(0.3)
        with pytest.raises(LockTimeoutError):
            await store.commit(slow, searching(version=1), ttl=TTL)
        assert await store.peek(chat) == StateRecord()

    async def test_release_unlocks_without_writing(self, store: StateStore) -> None:
        chat = new_chat()
        await save(store, chat, searching(version=3))
        turn = await store.begin(chat)
        await store.release(turn)
        again = await store.begin(chat, wait=0)
        assert again.record == searching(version=3)
        await store.release(again)

    async def test_rate_limit_allows_the_limit_then_refuses_politely_once(
        self, store: StateStore
    ) -> None:
        chat = new_chat()
        user = f"user-{chat.chat_id}"
        rate = RateLimit(limit=3, window=1)

        async def hit(rate_key: str = user) -> tuple[bool, bool]:
            turn = await store.begin(chat, rate_key=rate_key, rate=rate)
            await store.release(turn)
            return turn.rate.allowed, turn.rate.first_refusal

        started = time.monotonic()
        assert [await hit() for _ in range(3)] == [(True, False)] * 3
        assert await hit() == (False, True)  # the one "slow down" reply
        assert [await hit() for _ in range(3)] == [(False, False)] * 3  # then silence
        assert await hit(f"other-{chat.chat_id}") == (True, False)  # per user
        assert time.monotonic() - started < 0.9  # all of that inside one window
        await asyncio.sleep(1.1)
        assert await hit() == (True, False)

    async def test_without_a_rate_limit_every_turn_is_allowed(self, store: StateStore) -> None:
        chat = new_chat()
        for _ in range(5):
            turn = await store.begin(chat)
            assert turn.rate.allowed
            assert not turn.rate.first_refusal
            await store.release(turn)

    async def test_ping_answers(self, store: StateStore) -> None:
        await store.ping()


class TestRedisStateStore:
    async def test_each_turn_is_two_round_trips_on_the_wire(
        self, redis_url: str, redis_prefix: str, redis_client: Redis
    ) -> None:
        counter = WireCounter()
        client = counting_client(redis_url, counter)
        store = RedisStateStore(client, prefix=redis_prefix)
        try:
            # Warm up: the connection handshake and, on a fresh server, loading the scripts.
            await save(store, new_chat(), searching())
            rate = RateLimit(limit=30, window=60)
            for record in (searching(version=2), None, StateRecord()):
                chat = new_chat()
                claimed, written = store.round_trips, counter.writes
                turn = await store.begin(chat, rate_key=f"u{chat.chat_id}", rate=rate)
                await store.commit(turn, record, ttl=TTL)
                assert store.round_trips - claimed == 2
                assert counter.writes - written == 2
        finally:
            await client.aclose()

    async def test_keys_live_under_the_prefix_with_their_ttl(
        self, redis_client: Redis, redis_prefix: str
    ) -> None:
        store = RedisStateStore(redis_client, prefix=redis_prefix)
        chat = new_chat()
        turn = await store.begin(chat, lock_ttl=5)
        lock_ms = await redis_client.pttl(chat.lock_key(redis_prefix))
        assert 0 < lock_ms <= 5000
        await store.commit(turn, searching(), ttl=300)
        assert await redis_client.exists(chat.lock_key(redis_prefix)) == 0
        assert 295_000 < await redis_client.pttl(chat.state_key(redis_prefix)) <= 300_000

    async def test_an_unreadable_record_counts_as_empty_and_is_logged_without_content(
        self, redis_client: Redis, redis_prefix: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = RedisStateStore(redis_client, prefix=redis_prefix)
        chat = new_chat()
        for raw in ('{"state": "x", "data": {"passport": "X1234567"', '{"version": "high"}'):
            await redis_client.set(chat.state_key(redis_prefix), raw, ex=60)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="conversations.state"):
                turn = await store.begin(chat)
            assert turn.record == StateRecord()
            assert "unreadable state record" in caplog.text
            assert "X1234567" not in caplog.text
            assert "high" not in caplog.text
            await store.commit(turn, searching(), ttl=TTL)  # the chat starts over cleanly
            assert await store.peek(chat) == searching()

    async def test_unreachable_redis_is_state_unavailable_quickly(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        store = RedisStateStore.from_url(f"redis://127.0.0.1:{closed_port}/0", prefix="x")
        chat = new_chat()
        started = time.monotonic()
        with pytest.raises(StateUnavailableError):
            await store.begin(chat)
        with pytest.raises(StateUnavailableError):
            await store.peek(chat)
        with pytest.raises(StateUnavailableError):
            await store.ping()
        assert time.monotonic() - started < 1.0
        await store.close()

    async def test_redis_going_away_and_coming_back(
        self, redis_proxy: RedisProxy, redis_prefix: str, redis_client: Redis
    ) -> None:
        store = RedisStateStore.from_url(redis_proxy.url, prefix=redis_prefix)
        try:
            chat = new_chat()
            await save(store, chat, searching(version=1))
            # Several pooled connections, so recovery has stale idle ones to deal with too.
            await asyncio.gather(*(store.ping() for _ in range(4)))

            turn = await store.begin(chat, lock_ttl=0.5)
            await redis_proxy.stop()  # Redis dies mid-turn
            started = time.monotonic()
            with pytest.raises(StateUnavailableError):
                await store.commit(turn, searching(version=2), ttl=TTL)
            with pytest.raises(StateUnavailableError):
                await store.begin(chat)
            with pytest.raises(StateUnavailableError):
                await store.ping()
            assert time.monotonic() - started < 1.0

            await redis_proxy.start()
            await store.ping()  # the very first call after recovery works: no wedge
            # The unsaved turn's lock lapses by itself; the chat carries on where it was saved.
            resumed = await store.begin(chat, wait=3)
            assert resumed.record == searching(version=1)
            await store.commit(resumed, searching(version=2), ttl=TTL)
            assert await store.peek(chat) == searching(version=2)
        finally:
            await store.close()

    async def test_a_hung_redis_times_out_instead_of_hanging_the_chat(
        self, redis_proxy: RedisProxy, redis_prefix: str
    ) -> None:
        store = RedisStateStore.from_url(redis_proxy.url, prefix=redis_prefix, socket_timeout=0.3)
        try:
            await store.ping()
            await redis_proxy.stall()
            started = time.monotonic()
            with pytest.raises(StateUnavailableError):
                await store.begin(new_chat())
            assert time.monotonic() - started < 1.5
            await redis_proxy.start()
            await store.ping()
        finally:
            await store.close()

    async def test_more_chats_at_once_than_connections_wait_their_turn(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        store = RedisStateStore.from_url(redis_url, prefix=redis_prefix, max_connections=2)
        chats = [new_chat() for _ in range(30)]

        async def turn(chat: ChatKey, version: int) -> None:
            await save(store, chat, searching(version=version))

        try:
            await asyncio.gather(*(turn(chat, n + 1) for n, chat in enumerate(chats)))
            assert [await store.peek(chat) for chat in chats] == [
                searching(version=n + 1) for n in range(len(chats))
            ]
        finally:
            await store.close()

    async def test_close_leaves_an_injected_client_open(
        self, redis_client: Redis, redis_prefix: str, redis_url: str
    ) -> None:
        shared = RedisStateStore(redis_client, prefix=redis_prefix)
        await shared.close()
        assert await redis_client.ping()
        owned = RedisStateStore.from_url(redis_url, prefix=redis_prefix)
        await owned.ping()
        await owned.close()


class TestMemoryStateStore:
    async def test_ten_thousand_chats_leave_nothing_behind(self) -> None:
        # The store's own clock, so a slow machine cannot expire chats while they are counted.
        clock = [1_000.0]
        store = MemoryStateStore(sweep_interval=0.1, clock=lambda: clock[0])
        rate = RateLimit(limit=20, window=1)
        await save(store, new_chat(), searching(), ttl=1)  # warm up lazily built internals
        gc.collect()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for n in range(10_000):
                chat = ChatKey(bot_id=1, chat_id=n)
                turn = await store.begin(chat, rate_key=f"user-{n}", rate=rate)
                await store.commit(turn, searching(version=n, origin="LIS", n=n), ttl=1)
            assert len(store) >= 20_000  # a record and a rate window per traveller
            grown = tracemalloc.get_traced_memory()[0] - baseline
            clock[0] += 1.2
            await save(store, new_chat(), searching(), ttl=1)  # any turn triggers the sweep
            assert len(store) <= 3
            gc.collect()
            left = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        assert grown > 1_000_000  # the measurement sees the chats while they are live
        assert left < 64 * 1024, f"{left} bytes left after expiry"
        print(f"memory store: {grown / 1e6:.1f} MB for 10,000 live chats, {left} B after expiry")

    async def test_locks_do_not_accumulate(self) -> None:
        store = MemoryStateStore()
        for n in range(1_000):
            turn = await store.begin(ChatKey(bot_id=1, chat_id=n))
            await store.release(turn)
        assert len(store) == 0
