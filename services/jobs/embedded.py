"""The embedded job queue: the catalogue runs in this process, on timers, without Redis.

What ``travelbot console`` and a single process without REDIS_URL use: each scheduled job has
its own timer (a slow one does not hold the others back), each enqueued task is an asyncio task
that retries with its backoff. Nothing survives a restart: a task waiting for its next try is
dropped on exit (the log says which), as the in-process email retries always were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from services.jobs.base import JobCatalogue, RetryLaterError, TaskJob, run_tick, try_task

log = logging.getLogger(__name__)


class EmbeddedJobs:
    """``JobQueue`` and its runner in one: ``start`` begins the timers, ``enqueue`` runs."""

    name = "embedded"
    runs_here = True

    def __init__(self, catalogue: JobCatalogue) -> None:
        self.catalogue = catalogue
        self._timers: list[asyncio.Task[None]] = []
        self._tasks: dict[asyncio.Task[None], str] = {}

    # scheduled work ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start a timer per scheduled job; its first tick comes one interval from now."""
        for job in self.catalogue.scheduled.values():
            self._timers.append(asyncio.create_task(self._timer(job.name), name=f"job:{job.name}"))

    async def _timer(self, name: str) -> None:
        job = self.catalogue.scheduled[name]
        while True:
            await asyncio.sleep(job.interval)
            await run_tick(job)

    async def run_scheduled(self, name: str) -> bool:
        """One tick of a scheduled job now (tests, the seam): True when it succeeded."""
        return await run_tick(self.catalogue.scheduled[name])

    async def run_all_scheduled(self) -> None:
        for job in list(self.catalogue.scheduled.values()):
            await run_tick(job)

    # one-off work -----------------------------------------------------------------------------
    async def enqueue(self, job: str, **kwargs: Any) -> None:
        self.submit(job, **kwargs)

    def submit(self, job: str, **kwargs: Any) -> None:
        spec = self.catalogue.tasks[job]  # a KeyError here is a programming error
        task = asyncio.create_task(self._run(spec, kwargs), name=f"job:{job}")
        self._tasks[task] = job
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job task failed", exc_info=task.exception())

    async def _run(self, job: TaskJob, kwargs: dict[str, Any]) -> None:
        attempt = 1
        while True:
            try:
                await try_task(job, kwargs, attempt)
            except RetryLaterError as later:
                attempt += 1
                await asyncio.sleep(later.pause)
            except Exception:
                log.exception("job %s failed; not retried", job.name)
                return
            else:
                return

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, grace: float = 10.0) -> None:
        """Stop the timers; give tasks in flight ``grace`` seconds, then drop the rest."""
        for timer in self._timers:
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        self._timers.clear()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), timeout=grace)
        for task, job in list(self._tasks.items()):
            log.warning("shutting down: job %s was not finished", job)
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
