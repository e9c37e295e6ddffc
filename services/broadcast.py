"""The broadcast worker: an admin's message to every reachable user, at a pace Telegram accepts,
resumable after a restart, and never delivered to anyone twice.

Each recipient is a delivery row in storage (pending → sending → sent | failed | bot_blocked).
A lane claims one row just before sending it and records the outcome just after, so a worker
killed at any moment leaves at most one row per lane "sending". After a restart those rows are
marked ``interrupted`` and never sent again: Telegram cannot be asked whether a message it was
sending arrived, and a second copy is worse than a missed one. Everything else carries on where
it stopped.

One sender per broadcast, however many workers run: the sender holds a lease in storage and
renews it while it sends. A worker takes a broadcast over only when the lease was given up (a
clean stop) or ran out (its holder died); every worker looks for such broadcasts at start and
then at every tick of the ``broadcasts.adopt`` job (bot/jobs.py). On the arq queue a new broadcast
is handed to a ``travelbot worker`` (the ``broadcasts.send`` job, ``dispatch``); its lanes then
run in that worker under the lease, after the job itself has ended. A process that knows it is the only worker (polling, console)
takes over at start without waiting for its dead predecessor's lease to run out.

Pace: one shared token bucket (``rate`` messages a second, no burst) in front of every message
the worker sends, progress reports included. PTB's ``AIORateLimiter`` in the Application is the
second line; keeping the worker under Telegram's ~30/s leaves room for conversation replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from services import metrics
from services.messages import Message, esc
from services.models import Broadcast, BroadcastStatus, DeliveryStatus, utcnow
from services.notify import Notifier
from services.storage.base import Storage, StorageUnavailableError

log = logging.getLogger(__name__)

DEFAULT_RATE = 25.0  # messages a second; Telegram allows about 30 for the whole bot
DEFAULT_LANES = 4  # sends in flight at once: enough to keep the pace over a slow network
MAX_TEXT = 3500  # characters the admin may write (Telegram's limit is 4096 after parsing)
PROGRESS_STEPS = (25, 50, 75)  # percent
FLOOD_RETRIES = 3
STORAGE_RETRIES = (1.0, 2.0, 4.0, 8.0)  # seconds between tries when the database blips
DEFAULT_LEASE = timedelta(seconds=60)  # renewed every third of it while sending
_ANY_LEASE = datetime.max.replace(tzinfo=UTC)  # as "now" when taking over: every lease ran out


class Pacer:
    """Evenly spaced slots, ``rate`` a second, shared by every lane and every broadcast."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("the broadcast rate must be positive")
        self._interval = 1.0 / rate
        self._clock = clock
        self._next = 0.0

    async def take(self) -> None:
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def pause(self, seconds: float) -> None:
        """Telegram said 'retry after': nobody sends until then."""
        self._next = max(self._next, self._clock() + seconds)


def retry_after(error: BaseException) -> float | None:
    """Seconds from a flood-control error (PTB's ``RetryAfter``), without importing PTB."""
    with warnings.catch_warnings():
        # PTB 22 warns that the int form is deprecated; both forms are handled here.
        warnings.simplefilter("ignore")
        value = getattr(error, "retry_after", None)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


_T = TypeVar("_T")


def _n(number: int) -> str:
    return f"{number:,}"


async def _stored(call: Callable[[], Awaitable[_T]]) -> _T:
    """A storage call, tried again over a short outage; every call the lanes make is safe to
    repeat (a repeated claim at worst leaves a row to be counted as interrupted)."""
    for pause in STORAGE_RETRIES:
        try:
            return await call()
        except StorageUnavailableError:
            log.warning("broadcast: storage unavailable, trying again in %.0fs", pause)
            await asyncio.sleep(pause)
    return await call()


@dataclass(slots=True)
class _Run:
    """One broadcast being delivered by this process."""

    broadcast: Broadcast
    done: int  # finished deliveries (any outcome) when this run started, then counted up
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    reported: set[int] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    @property
    def id(self) -> int:
        return self.broadcast.id


class BroadcastWorker:
    """Starts, resumes, paces, reports and cancels broadcasts for one bot process."""

    def __init__(
        self,
        storage: Storage,
        notifier: Notifier,
        *,
        rate: float = DEFAULT_RATE,
        lanes: int = DEFAULT_LANES,
        stuck_after: timedelta = timedelta(minutes=2),
        lease: timedelta = DEFAULT_LEASE,
        sole_worker: bool = False,
        dispatch: Callable[[int], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``sole_worker``: no other process can be sending (polling, console), so whatever
        lease is found at start belongs to a dead predecessor. ``dispatch``: hands a new
        broadcast to the job queue (``travelbot worker`` sends it, ``send``) instead of
        sending it from this process."""
        self._dispatch = dispatch
        self.owner = uuid.uuid4().hex
        self._lease = lease
        self._sole_worker = sole_worker
        self._storage = storage
        self._notifier = notifier
        self._pacer = Pacer(rate)
        self.rate = rate
        self._lanes = max(1, lanes)
        self._stuck_after = stuck_after
        self._now = clock
        self._runs: dict[int, _Run] = {}

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> list[Broadcast]:
        """Resume what a previous run left unfinished."""
        return await self.adopt(take_over=self._sole_worker)

    async def adopt(self, *, take_over: bool = False) -> list[Broadcast]:
        """Carry on every running broadcast whose sender is gone (its lease given up or run
        out; with ``take_over``, whatever the lease says).

        Deliveries the previous sender had claimed are marked interrupted first: holding the
        lease now, this worker knows none of them is still being sent.
        """
        resumed = []
        for broadcast in await self._storage.list_running_broadcasts():
            if broadcast.id in self._runs or not await self._hold(broadcast.id, take_over):
                continue
            stuck = await self._storage.recover_stuck_deliveries(
                broadcast.id, claimed_before=self._now()
            )
            counts = await self._storage.broadcast_counts(broadcast.id)
            done = _finished(counts)
            text = (
                f"📣 Broadcast #{broadcast.id} resumed after a restart: {_n(done)} of "
                f"{_n(broadcast.total)} were done."
            )
            if stuck:
                text += (
                    f" {len(stuck)} message(s) were being sent when the bot stopped; they are "
                    "not sent again, so those users may have missed it."
                )
            log.info(
                "resuming broadcast %s (%d done, %d interrupted)", broadcast.id, done, len(stuck)
            )
            run = self._launch(broadcast, done)
            run.reported.update(p for p in PROGRESS_STEPS if done * 100 >= p * broadcast.total)
            await self._tell(broadcast.admin_id, text)
            resumed.append(broadcast)
        return resumed

    async def _hold(self, broadcast_id: int, take_over: bool = False) -> bool:
        """Take or renew this worker's lease on a broadcast."""
        now = self._now()
        return await self._storage.claim_broadcast_lease(
            broadcast_id,
            self.owner,
            now=_ANY_LEASE if take_over else now,
            until=now + self._lease,
        )

    async def stop(self, *, grace: float = 10.0) -> None:
        """Let each lane finish the message it is sending, then stop. Nothing is left in doubt
        unless a send outlasts ``grace``."""
        runs = list(self._runs.values())
        for run in runs:
            run.stopping.set()
        tasks = [run.task for run in runs if run.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # admin actions ---------------------------------------------------------------------------
    async def running(self) -> list[Broadcast]:
        return await self._storage.list_running_broadcasts()

    async def recipients(self) -> int:
        return len(await self._storage.list_recipient_ids())

    async def create(self, admin_id: int, text: str) -> Broadcast:
        """Store the broadcast with its recipients (as of now) and start delivering it."""
        if not text.strip():
            raise ValueError("a broadcast needs a text")
        recipients = await self._storage.list_recipient_ids()
        broadcast = await self._storage.create_broadcast(admin_id, text, recipients)
        log.info("broadcast %s created for %d recipients", broadcast.id, broadcast.total)
        if self._dispatch is not None:
            # A lost hand-over is not lost work: adoption finds an unleased running broadcast.
            await self._dispatch(broadcast.id)
            return broadcast
        await self._hold(broadcast.id)  # new, so nobody else holds it
        self._launch(broadcast, 0)
        return broadcast

    async def send(self, broadcast_id: int) -> bool:
        """The queue's job for a new broadcast: start delivering it here unless another
        worker holds it (a repeated job then does nothing). Returns once the lanes run: they
        carry on in this process, under the lease, after the job has ended."""
        broadcast = await self._storage.get_broadcast(broadcast_id)
        if broadcast is None or broadcast.status is not BroadcastStatus.RUNNING:
            return False
        if broadcast_id in self._runs or not await self._hold(broadcast_id):
            return False
        counts = await self._storage.broadcast_counts(broadcast_id)
        self._launch(broadcast, _finished(counts))
        return True

    async def cancel(self, broadcast_id: int) -> bool:
        """Stop a running broadcast; False when it was not running. The lanes see it at their
        next claim (in any process); the one delivering it reports the counts."""
        cancelled = await self._storage.set_broadcast_status(
            broadcast_id, BroadcastStatus.RUNNING, BroadcastStatus.CANCELLED
        )
        run = self._runs.get(broadcast_id)
        if run is not None:
            run.stopping.set()
        return cancelled

    async def wait(self, broadcast_id: int) -> None:
        """Until this process has stopped delivering the broadcast (tests, benchmarks)."""
        run = self._runs.get(broadcast_id)
        if run is not None and run.task is not None:
            await asyncio.shield(run.task)

    # delivery --------------------------------------------------------------------------------
    def _launch(self, broadcast: Broadcast, done: int) -> _Run:
        run = _Run(broadcast=broadcast, done=done)
        self._runs[broadcast.id] = run
        run.task = asyncio.create_task(self._run(run), name=f"broadcast-{broadcast.id}")
        return run

    async def _run(self, run: _Run) -> None:
        started = time.monotonic()
        keeper = asyncio.create_task(self._keep_lease(run), name=f"broadcast-{run.id}-lease")
        try:
            lanes = [asyncio.create_task(self._lane(run)) for _ in range(self._lanes)]
            try:
                await asyncio.gather(*lanes)
            except BaseException:
                for lane in lanes:
                    lane.cancel()
                await asyncio.gather(*lanes, return_exceptions=True)
                raise
            if not (run.stopping.is_set() and await self._is_running(run.id)):
                await self._finish(run, time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("broadcast %s stopped on an error; it resumes on restart", run.id)
            await self._tell(
                run.broadcast.admin_id,
                f"⚠️ Broadcast #{run.id} paused on an error after {_n(run.done)} of "
                f"{_n(run.broadcast.total)}; it carries on when the bot restarts.",
            )
        finally:
            keeper.cancel()
            self._runs.pop(run.id, None)
            with contextlib.suppress(Exception):  # unreleased, it runs out by itself
                await self._storage.release_broadcast_lease(run.id, self.owner)

    async def _keep_lease(self, run: _Run) -> None:
        """Renew the lease while the lanes send; losing it (this worker stalled so long that
        another took over, or the broadcast ended elsewhere) stops them."""
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            try:
                held = await self._hold(run.id)
            except StorageUnavailableError:
                log.warning("broadcast %s: could not renew the lease; trying again", run.id)
                continue
            if not held:
                log.warning("broadcast %s: lease lost; this worker stops sending it", run.id)
                run.stopping.set()
                return

    async def _lane(self, run: _Run) -> None:
        while not run.stopping.is_set():
            await self._pacer.take()
            if run.stopping.is_set():
                return
            claimed = await _stored(partial(self._storage.claim_deliveries, run.id, 1))
            if not claimed:
                return
            user_id = claimed[0]
            outcome = await self._deliver(run, user_id)
            metrics.broadcast_delivery(outcome.value)
            await _stored(partial(self._storage.finish_delivery, run.id, user_id, outcome))
            run.done += 1
            await self._progress(run)

    async def _deliver(self, run: _Run, user_id: int) -> DeliveryStatus:
        profile = await _stored(partial(self._storage.get_profile, user_id))
        if profile is None or profile.blocked or profile.bot_blocked:
            # Erased, blocked by an admin or unreachable since the broadcast was created.
            log.info("broadcast %s: user %s skipped (blocked or erased since)", run.id, user_id)
            return DeliveryStatus.FAILED
        message = Message(text=run.broadcast.text)
        for attempt in range(FLOOD_RETRIES + 1):
            try:
                delivered = await self._notifier.notify(user_id, message)
            except Exception as error:  # noqa: BLE001 - any transport error; PTB stays out of services
                wait = retry_after(error)
                if wait is None or attempt == FLOOD_RETRIES:
                    # The message may or may not have arrived (a timeout): never resent.
                    log.warning(
                        "broadcast %s: delivery to %s failed: %s",
                        run.id,
                        user_id,
                        type(error).__name__,
                    )
                    return DeliveryStatus.FAILED
                # Flood control: Telegram did not take the message, so sending again is safe.
                log.info("broadcast %s: flood control, pausing %.1fs", run.id, wait)
                self._pacer.pause(wait)
                await self._pacer.take()
                continue
            if not delivered:
                await _stored(partial(self._storage.set_bot_blocked, user_id, True))
                return DeliveryStatus.BOT_BLOCKED
            return DeliveryStatus.SENT
        return DeliveryStatus.FAILED  # pragma: no cover - the loop always returns

    async def _progress(self, run: _Run) -> None:
        total = run.broadcast.total
        for step in PROGRESS_STEPS:
            if step in run.reported or run.done * 100 < step * total or run.done >= total:
                continue
            run.reported.add(step)
            await self._tell(
                run.broadcast.admin_id,
                f"📣 Broadcast #{run.id}: {_n(run.done)} of {_n(total)} done ({step}%).",
            )

    async def _is_running(self, broadcast_id: int) -> bool:
        current = await self._storage.get_broadcast(broadcast_id)
        return current is not None and current.status is BroadcastStatus.RUNNING

    async def _finish(self, run: _Run, elapsed: float) -> None:
        """Report the end once: the run that moves the broadcast to done (or that was
        delivering it when it was cancelled) tells the admin the counts."""
        counts = await self._storage.broadcast_counts(run.id)
        deadline = time.monotonic() + self._stuck_after.total_seconds() + 5
        # Rows another worker still has in flight, or a dead one left behind: wait for them
        # to finish, or to become old enough to count as interrupted.
        while counts[DeliveryStatus.SENDING] and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            await self._storage.recover_stuck_deliveries(
                run.id, claimed_before=self._now() - self._stuck_after
            )
            counts = await self._storage.broadcast_counts(run.id)
        current = await self._storage.get_broadcast(run.id)
        if current is None:
            return
        if current.status is BroadcastStatus.RUNNING:
            if counts[DeliveryStatus.PENDING] or counts[DeliveryStatus.SENDING]:
                return  # someone else is still delivering it
            if not await self._storage.set_broadcast_status(
                run.id, BroadcastStatus.RUNNING, BroadcastStatus.DONE
            ):
                return
            ended, head = BroadcastStatus.DONE, f"✅ Broadcast #{run.id} finished"
        elif current.status is BroadcastStatus.CANCELLED:
            ended, head = BroadcastStatus.CANCELLED, f"✋ Broadcast #{run.id} cancelled"
        else:
            return
        duration = self._now() - run.broadcast.created_at
        log.info("broadcast %s %s; this run took %.1fs: %s", run.id, ended.value, elapsed, counts)
        await self._tell(run.broadcast.admin_id, final_report(head, counts, duration))

    async def _tell(self, admin_id: int, text: str) -> None:
        await self._pacer.take()
        try:
            await self._notifier.notify(admin_id, Message(text=text))
        except Exception:  # a report that cannot be sent must not stop the broadcast
            log.warning("could not report broadcast progress to admin %s", admin_id, exc_info=True)


def _finished(counts: dict[str, int]) -> int:
    return sum(
        counts.get(status, 0)
        for status in (
            DeliveryStatus.SENT,
            DeliveryStatus.FAILED,
            DeliveryStatus.BOT_BLOCKED,
            DeliveryStatus.INTERRUPTED,
        )
    )


def final_report(head: str, counts: dict[str, int], duration: timedelta) -> str:
    seconds = max(int(duration.total_seconds()), 0)
    took = f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    lines = [
        f"{head} after {took}:",
        f"  delivered: {_n(counts.get(DeliveryStatus.SENT, 0))}",
        f"  have blocked the bot: {_n(counts.get(DeliveryStatus.BOT_BLOCKED, 0))}",
        f"  failed or skipped (blocked, erased): {_n(counts.get(DeliveryStatus.FAILED, 0))}",
    ]
    if counts.get(DeliveryStatus.INTERRUPTED, 0):
        lines.append(
            f"  interrupted by a restart, not resent: {_n(counts[DeliveryStatus.INTERRUPTED])}"
        )
    if counts.get(DeliveryStatus.PENDING, 0):
        lines.append(f"  not sent: {_n(counts[DeliveryStatus.PENDING])}")
    return "\n".join(lines)


def escape_text(text: str) -> str:
    """The admin's text as Telegram HTML: sent as typed, nothing interpreted."""
    return esc(text.strip())
