"""The job catalogue and the queue port.

A feature's background work is one line in the catalogue (bot/jobs.py): ``every`` for a tick
that runs on a timer, ``task`` for one-off work that is enqueued with keyword arguments and
retried with backoff. Both adapters run the same catalogue, so a job behaves the same in the
console as on a fleet of workers; only where and how often it may run twice differs, which is
why every job body must be safe to repeat (conditional transitions, leases): a worker killed
mid-job has its job run again by another.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

Tick = Callable[[], Awaitable[object]]
Body = Callable[..., Awaitable[object]]
GaveUp = Callable[[BaseException, Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Tries and the pauses between them: ``first`` seconds, doubling up to ``longest``, each
    with up to ``first`` seconds of jitter (so a burst of failures does not retry in step)."""

    attempts: int = 8
    first: float = 5.0
    longest: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first < 0 or self.longest < self.first:
            raise ValueError("a backoff needs 1+ attempts and 0 <= first <= longest")

    def pause(self, failed_attempt: int) -> float:
        """Seconds to wait after try number ``failed_attempt`` (1-based) failed."""
        base = self.first * float(2 ** max(failed_attempt - 1, 0))
        return min(self.longest, base + random.uniform(0, self.first))  # noqa: S311


NO_RETRY = Backoff(attempts=1, first=0.0, longest=0.0)


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    name: str
    interval: float  # seconds between ticks
    run: Tick


@dataclass(frozen=True, slots=True)
class TaskJob:
    name: str
    run: Body
    backoff: Backoff = NO_RETRY
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    gave_up: GaveUp | None = None  # after the last try failed (alert someone)


@dataclass(slots=True)
class JobCatalogue:
    """Every job of the bot, by name. Filled once at start-up, before a queue runs it."""

    scheduled: dict[str, ScheduledJob] = field(default_factory=dict)
    tasks: dict[str, TaskJob] = field(default_factory=dict)

    def every(self, interval: float, name: str, run: Tick) -> None:
        """Run ``run()`` every ``interval`` seconds: once per tick across all workers."""
        if interval <= 0:
            raise ValueError(f"job {name!r}: the interval must be positive")
        self._free(name)
        self.scheduled[name] = ScheduledJob(name, float(interval), run)

    def task(
        self,
        name: str,
        run: Body,
        *,
        backoff: Backoff = NO_RETRY,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        gave_up: GaveUp | None = None,
    ) -> None:
        """One-off work, ``run(**kwargs)`` per ``enqueue(name, **kwargs)``; an exception of
        ``retry_on`` tries again after ``backoff`` until its attempts are spent, then
        ``gave_up(error, kwargs)``. Other exceptions end the job (logged)."""
        self._free(name)
        self.tasks[name] = TaskJob(name, run, backoff, retry_on, gave_up)

    def _free(self, name: str) -> None:
        if name in self.scheduled or name in self.tasks:
            raise ValueError(f"job {name!r} is already in the catalogue")


class JobQueue(Protocol):
    """Where services hand work to: run here (embedded) or by a worker (arq)."""

    @property
    def name(self) -> str: ...

    @property
    def runs_here(self) -> bool:
        """Whether this process runs the jobs it enqueues (the embedded adapter)."""
        ...

    async def enqueue(self, job: str, **kwargs: Any) -> None:
        """Hand one run of a catalogue ``task`` over; returns once it is safely queued."""
        ...

    def submit(self, job: str, **kwargs: Any) -> None:
        """``enqueue`` from code that must not wait (a hook called mid-transition)."""
        ...

    @property
    def pending(self) -> int:
        """Jobs handed over by this process and not yet queued (arq) or done (embedded)."""
        ...

    async def drain(self) -> None:
        """Until everything handed over so far is queued (arq) or done (embedded)."""
        ...

    async def close(self, grace: float = 10.0) -> None: ...


async def run_tick(job: ScheduledJob) -> bool:
    """One tick; a failure is logged and waits for the next tick. True when it succeeded."""
    try:
        await job.run()
    except Exception:  # a bad tick must not stop the others or the next one
        log.warning(
            "scheduled job %s failed; it runs again at the next tick", job.name, exc_info=True
        )
        return False
    return True


async def give_up(job: TaskJob, error: BaseException, kwargs: Mapping[str, Any]) -> None:
    if job.gave_up is None:
        return
    try:
        await job.gave_up(error, kwargs)
    except Exception:  # the hook alerts; its own failure must not take the worker down
        log.exception("job %s: the give-up hook failed", job.name)


class RetryLaterError(Exception):
    """A try failed with an error worth another (``retry_on``): the next, ``pause`` seconds on."""

    def __init__(self, pause: float) -> None:
        super().__init__(pause)
        self.pause = pause


async def try_task(job: TaskJob, kwargs: Mapping[str, Any], attempt: int) -> None:
    """Try ``job`` for the ``attempt``-th time; both queues wait and count in their own way.

    Raises ``RetryLaterError`` (from the error) while tries are left, runs the give-up hook once they
    are spent; an error outside ``retry_on`` is raised as it is."""
    try:
        await job.run(**kwargs)
    except job.retry_on as error:
        if attempt >= job.backoff.attempts:
            log.warning("job %s given up after %d tries: %s", job.name, attempt, error)
            await give_up(job, error, kwargs)
            return
        pause = job.backoff.pause(attempt)
        log.info(
            "job %s failed (try %d of %d: %s); retrying in %.1f s",
            job.name,
            attempt,
            job.backoff.attempts,
            error,
            pause,
        )
        raise RetryLaterError(pause) from error
