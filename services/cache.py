"""The cache port: bytes under a key for a while, and computations shared between callers.

``single_flight`` is why this exists: a hundred travellers asking for the same route at the same
moment must cost one provider call. In one process the callers share one task; across processes
(Redis) one of them takes a short lock key (``SET NX``) and computes while the others wait for
the value to appear. A leader that crashes only delays the others: its lock expires, and a
waiter that has waited too long computes by itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Compute = Callable[[], Awaitable[bytes]]


class CacheUnavailableError(RuntimeError):
    """The cache backend did not answer; callers carry on without it."""


@dataclass(frozen=True, slots=True)
class Flight:
    """The outcome of ``single_flight``: the value, and whether this caller computed it."""

    value: bytes
    computed: bool


class Cache(ABC):
    """Adapters: ``MemoryCache`` (embedded default) and ``RedisCache``."""

    name: str

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Task[Flight]] = {}

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value, or None. Raises ``CacheUnavailableError``."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in order (None where missing); one round trip on Redis.
        Raises ``CacheUnavailableError``."""
        return [await self.get(key) for key in keys]

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds. Raises ``CacheUnavailableError``."""

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def clear(self) -> int:
        """Drop every entry this cache holds (its prefix only, on Redis); returns how many."""

    async def ping(self) -> None:  # noqa: B027 - memory is always there
        """Raise ``CacheUnavailableError`` unless the backend answers."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def single_flight(self, key: str, compute: Compute, ttl: float) -> Flight:
        """The cached value, or ``compute()`` run once for every concurrent caller of ``key``.

        Callers that joined a computation (in this process or another) get ``computed=False``;
        an exception from ``compute`` reaches every caller that shared it. The computation runs
        in its own task, so a caller that gives up (cancelled) does not cancel it for the
        others. A backend that is down degrades to sharing within this process only.
        """
        try:
            cached = await self.get(key)
        except CacheUnavailableError:
            cached = None
        if cached is not None:
            return Flight(cached, computed=False)
        task = self._inflight.get(key)
        leader = task is None
        if task is None:
            task = asyncio.create_task(self._lead(key, compute, ttl))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        result = await asyncio.shield(task)
        return result if leader else Flight(result.value, computed=False)

    def _finished(self, key: str, task: asyncio.Task[Flight]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: callers that still wait get it through shield()

    async def _lead(self, key: str, compute: Compute, ttl: float) -> Flight:
        """Compute for this process; adapters shared between processes coordinate here."""
        value = await compute()
        try:
            await self.set(key, value, ttl)
        except CacheUnavailableError:
            log.warning("cache unavailable: result not stored")
        return Flight(value, computed=True)


class MemoryCache(Cache):
    """In-process cache with a size bound; expired entries are dropped as they are met."""

    name = "memory"

    def __init__(self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._clock() + ttl, bytes(value))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        return count


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


# Delete the lock only if it still holds our token: a lock that expired and was taken by another
# worker must not be released by us.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisCache(Cache):
    """Redis adapter: values under ``{prefix}:v:{key}``, leader locks under ``{prefix}:l:{key}``."""

    name = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "travelbot:cache",
        lock_ttl: float = 30.0,
        wait_timeout: float = 15.0,
        poll_interval: float = 0.01,
        owns_client: bool = False,
    ) -> None:
        super().__init__()
        self._redis = client
        self._prefix = prefix
        self._lock_ttl = lock_ttl
        self._wait_timeout = wait_timeout
        self._poll = poll_interval
        self._owns_client = owns_client
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisCache:
        client = aioredis.Redis.from_url(url, decode_responses=False)
        return cls(client, owns_client=True, **options)

    def _value_key(self, key: str) -> str:
        return f"{self._prefix}:v:{key}"

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}:l:{key}"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self._value_key(key))
        except RedisError as exc:
            raise CacheUnavailableError(f"redis: {exc.__class__.__name__}") from exc
        return None if value is None else _as_bytes(value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            values = await self._redis.mget([self._value_key(key) for key in keys])
        except RedisError as exc:
            raise CacheUnavailableError(f"redis: {exc.__class__.__name__}") from exc
        return [None if value is None else _as_bytes(value) for value in values]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            if ttl <= 0:
                await self._redis.delete(self._value_key(key))
            else:
                await self._redis.set(self._value_key(key), value, px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            raise CacheUnavailableError(f"redis: {exc.__class__.__name__}") from exc

    async def delete(self, key: str) -> None:
        try:
            await self._redis.delete(self._value_key(key), self._lock_key(key))
        except RedisError as exc:
            raise CacheUnavailableError(f"redis: {exc.__class__.__name__}") from exc

    async def clear(self) -> int:
        deleted = 0
        try:
            batch: list[bytes | str] = []
            async for key in self._redis.scan_iter(match=f"{self._prefix}:*", count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await self._redis.delete(*batch)
                    batch.clear()
            if batch:
                deleted += await self._redis.delete(*batch)
        except RedisError as exc:
            raise CacheUnavailableError(f"redis: {exc.__class__.__name__}") from exc
        return deleted

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise CacheUnavailableError(f"redis: {exc.__class__.__name__}") from exc

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    async def _lead(self, key: str, compute: Compute, ttl: float) -> Flight:
        lock_key = self._lock_key(key)
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self._wait_timeout
        delay = self._poll
        try:
            while True:
                if await self._redis.set(lock_key, token, nx=True, px=int(self._lock_ttl * 1000)):
                    break
                # Another process is computing: wait for its value, or for its lock to go.
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.1)
                value = await self._redis.get(self._value_key(key))
                if value is not None:
                    return Flight(_as_bytes(value), computed=False)
                if time.monotonic() >= deadline:
                    log.warning("cache leader for a key did not finish in time; computing")
                    return await super()._lead(key, compute, ttl)
            # We hold the lock; the value may have landed between our first read and now.
            value = await self._redis.get(self._value_key(key))
        except RedisError:
            log.warning("redis unavailable for single flight; computing in this process")
            return await super()._lead(key, compute, ttl)
        if value is not None:
            await self._unlock(lock_key, token)
            return Flight(_as_bytes(value), computed=False)
        try:
            return await super()._lead(key, compute, ttl)
        finally:
            await self._unlock(lock_key, token)

    async def _unlock(self, lock_key: str, token: str) -> None:
        try:
            await self._release(keys=[lock_key], args=[token])
        except RedisError:
            log.warning("could not release a cache lock; it expires by itself")
