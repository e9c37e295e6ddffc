"""The Redis state store: conversation state shared by any number of workers.

Each turn is two round trips. ``begin`` runs one Lua script that takes the chat's lock
(``SET NX PX``), reads the record and counts the rate-limit hit; ``commit`` runs one script that
checks the lock is still ours, writes (or deletes, or only re-arms the TTL of) the record and
releases the lock. Scripts go by ``EVALSHA``; a server that does not know one yet (first use,
restart, ``SCRIPT FLUSH``) gets the body once by ``EVAL``, which also caches it.

Records are JSON strings (the same bytes the memory store keeps). Keys come from ``ChatKey``;
they carry no hash tag, so this is for a single Redis (or Sentinel), not Redis Cluster.

Every Redis failure surfaces as ``StateUnavailableError``. Each call has a deadline (two seconds
for stores built by ``from_url``) and there are no automatic retries: during an outage a user
hears "temporarily unavailable" within seconds, and a script is never run twice because a reply
was lost.

Why ``from_url`` sets the deadline itself instead of redis-py's ``socket_timeout``: on Python
3.11 redis-py wraps every socket write in ``asyncio.wait_for``, which starts a task per command.
One ``asyncio.timeout`` per call, and a plain pool behind a semaphore instead of a
``BlockingConnectionPool``, made a turn (``begin`` + ``commit``, 40 chats at once) about 7 % cheaper
in CPU, and the deadline now covers the whole call, waiting for a connection included. A call cut
short by its deadline closes its connection, as redis-py does for any interrupted command, so no
reply is ever read by the wrong caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from conversations.state import (
    ALLOW,
    ChatKey,
    LockTimeoutError,
    RateLimit,
    StateRecord,
    StateStore,
    StateUnavailableError,
    Turn,
)
from conversations.state_memory import decode_record, encode_record, new_token, rate_decision

# KEYS: lock, state[, rate]   ARGV: token, lock_ms[, window_ms]
# -> {1, record or nil, hits}  when the lock was taken
# -> {0, lock's remaining ms}  when another holder has it
_BEGIN = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
local hits = 0
if KEYS[3] then
  hits = redis.call('INCR', KEYS[3])
  if redis.call('PTTL', KEYS[3]) < 0 then
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
  end
end
return {1, redis.call('GET', KEYS[2]), hits}
"""

# KEYS: lock, state   ARGV: token, mode (set | del | touch), ttl_ms, payload
# -> 1 when written and unlocked; 0 when the lock is no longer ours (nothing touched)
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'set' then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
elseif ARGV[2] == 'del' then
  redis.call('DEL', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lock   ARGV: token
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Waiting for a busy chat's lock: first retry after ~5 ms, doubling to at most ~100 ms.
_FIRST_RETRY = 0.005
_MAX_RETRY = 0.1


@dataclass(frozen=True, slots=True)
class _Script:
    body: str
    sha: str

    @classmethod
    def of(cls, body: str) -> _Script:
        return cls(body, hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest())


_BEGIN_SCRIPT = _Script.of(_BEGIN)
_COMMIT_SCRIPT = _Script.of(_COMMIT)
_RELEASE_SCRIPT = _Script.of(_RELEASE)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStateStore(StateStore):
    """Conversation state in Redis; the client is injected (or built by ``from_url``)."""

    name = "redis"

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "tb",
        owns_client: bool = False,
        call_timeout: float | None = None,
        max_calls: int | None = None,
    ) -> None:
        """``call_timeout``: a deadline for each call, on top of any the client has.
        ``max_calls``: calls in flight at once; more wait for a turn (the client's pool size)."""
        self._client = client
        self._prefix = prefix
        self._owns_client = owns_client
        self._call_timeout = call_timeout
        self._slots = asyncio.Semaphore(max_calls) if max_calls else None
        # Commands and scripts sent to Redis: what the throughput benchmark reports per update.
        self.round_trips = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "tb",
        socket_timeout: float = 2.0,
        max_connections: int = 64,
    ) -> RedisStateStore:
        """A store with its own client, closed by ``close()``.

        When all ``max_connections`` are busy a call waits for one (within its deadline)
        instead of failing with "too many connections".
        """
        pool = ConnectionPool.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=None,  # the store's own deadline covers each call (see above)
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            # RESP2: under RESP3 redis-py 8 turns on maintenance notifications and then skips
            # its check for pooled connections the server closed, so after a Redis restart each
            # idle connection would fail one turn ("temporarily unavailable") with Redis back.
            protocol=2,
        )
        return cls(
            Redis.from_pool(pool),
            prefix=prefix,
            owns_client=True,
            call_timeout=socket_timeout,
            max_calls=max_connections,
        )

    @property
    def prefix(self) -> str:
        return self._prefix

    async def begin(
        self,
        key: ChatKey,
        *,
        rate_key: str | None = None,
        rate: RateLimit | None = None,
        wait: float = 10.0,
        lock_ttl: float = 30.0,
    ) -> Turn:
        keys = [key.lock_key(self._prefix), key.state_key(self._prefix)]
        token = new_token()
        args: list[str | int] = [token, _ms(lock_ttl)]
        if rate_key is not None and rate is not None:
            keys.append(f"{self._prefix}:rate:{rate_key}")
            args.append(_ms(rate.window))
        deadline = time.monotonic() + wait
        delay = _FIRST_RETRY
        while True:
            reply = await self._run(_BEGIN_SCRIPT, keys, args)
            if reply[0] == 1:
                decision = ALLOW
                if rate is not None and rate_key is not None:
                    decision = rate_decision(reply[2], rate.limit)
                record = decode_record(reply[1], key)
                return Turn(key=key, record=record, token=token, rate=decision)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeoutError(f"chat {key.chat_id} stayed locked for more than {wait:g}s")
            holder_left = reply[1] / 1000 if reply[1] > 0 else delay
            # Jitter spreads out waiters that arrived together; not a security matter.
            pause = delay * random.uniform(0.5, 1.5)  # noqa: S311
            await asyncio.sleep(min(pause, holder_left, remaining))
            delay = min(delay * 2, _MAX_RETRY)

    async def commit(self, turn: Turn, record: StateRecord | None, *, ttl: int) -> None:
        if record is None:
            mode, payload = "touch", ""
        elif record.is_empty:
            mode, payload = "del", ""
        else:
            mode, payload = "set", encode_record(record)
        keys = [turn.key.lock_key(self._prefix), turn.key.state_key(self._prefix)]
        done = await self._run(_COMMIT_SCRIPT, keys, [turn.token, mode, _ms(ttl), payload])
        if done != 1:
            # Someone else may hold the chat now and has read the record we were about to
            # overwrite: writing would lose their update, so nothing is written.
            raise LockTimeoutError(
                f"chat {turn.key.chat_id}: the lock expired before this update was saved; "
                "nothing was written"
            )

    async def release(self, turn: Turn) -> None:
        await self._run(_RELEASE_SCRIPT, [turn.key.lock_key(self._prefix)], [turn.token])

    async def peek(self, key: ChatKey) -> StateRecord:
        raw = await self._call(lambda: self._client.get(key.state_key(self._prefix)))
        return decode_record(raw, key)

    async def ping(self) -> None:
        await self._call(self._client.ping)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _run(self, script: _Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        async def evalsha_or_eval() -> Any:
            self.round_trips += 1
            # redis-py 5's stubs type the key/arg list as str only and the reply as maybe
            # synchronous; both calls take ints and are awaitable on the asyncio client.
            words = [*keys, *(str(arg) for arg in args)]
            try:
                return await cast(
                    Awaitable[Any], self._client.evalsha(script.sha, len(keys), *words)
                )
            except NoScriptError:
                self.round_trips += 1
                return await cast(Awaitable[Any], self._client.eval(script.body, len(keys), *words))

        return await self._guarded(evalsha_or_eval)

    async def _call(self, command: Callable[[], Awaitable[Any]]) -> Any:
        self.round_trips += 1
        return await self._guarded(command)

    async def _guarded(self, command: Callable[[], Awaitable[Any]]) -> Any:
        """Run within the call's deadline and a free slot; any failure is the store's error."""
        try:
            async with asyncio.timeout(self._call_timeout):
                if self._slots is None:
                    return await command()
                async with self._slots:
                    return await command()
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            raise StateUnavailableError(f"Redis did not answer: {type(exc).__name__}") from exc
