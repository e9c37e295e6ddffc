"""The job queue on Redis (arq): processes enqueue, ``travelbot worker`` processes run.

Several workers never run one job twice:

- A scheduled tick is one arq job whose id names the job and the tick (``name@<tick number>``,
  the tick number being the wall-clock time divided by the interval). Every worker's ticker
  enqueues it; arq refuses an id that is queued, running or finished within the result's
  lifetime (kept for several intervals), so one run per tick whoever enqueues first.
- A worker holds a job with an "in progress" key that outlives the job's timeout by
  ``in_progress_margin`` seconds. A worker killed (SIGKILL) mid-job leaves the job in the
  queue; once its key runs out another worker runs it again, so job bodies must be safe to
  repeat, which ours are (conditional transitions, leases).
- A task's retryable failure is re-queued with its backoff (``Retry``); the try count lives in
  Redis, so a retry may run on another worker.

Arguments are pickled into Redis: pass ids and amounts, never personal data (the worker loads
the booking from storage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any, cast

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Function, Retry, Worker, func

from services.jobs.base import (
    JobCatalogue,
    RetryLaterError,
    ScheduledJob,
    TaskJob,
    run_tick,
    try_task,
)

log = logging.getLogger(__name__)

HEALTH_SUFFIX = ":health-check"  # arq's: ``<queue>:health-check`` while a worker lives


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


def tick_id(queue: str, name: str, interval: float, now: float) -> tuple[str, float]:
    """The id of the tick ``now`` falls in, and when the next tick starts (epoch seconds).

    arq's keys are ``arq:job:<id>`` whatever the queue: ids carry the queue's name so that
    bots sharing a Redis never collide (and a test can find its own keys)."""
    number = int(now // interval)
    return f"{queue}:{name}@{number}", (number + 1) * interval


def job_keys_pattern(queue: str) -> str:
    """Every arq key of this queue's jobs (ids start with the queue's name)."""
    return f"arq:*:{queue}:*"


class ArqJobs:
    """``JobQueue`` on arq: enqueues only; a ``travelbot worker`` runs the jobs."""

    name = "arq"
    runs_here = False

    def __init__(self, pool: ArqRedis, queue_name: str) -> None:
        self._pool = pool
        self.queue_name = queue_name
        self._owns_pool = False
        self._handing: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(cls, url: str, queue_name: str) -> ArqJobs:
        pool = await create_pool(redis_settings(url), default_queue_name=queue_name)
        jobs = cls(pool, queue_name)
        jobs._owns_pool = True
        return jobs

    async def enqueue(self, job: str, **kwargs: Any) -> None:
        job_id = f"{self.queue_name}:{uuid.uuid4().hex}"
        await self._pool.enqueue_job(job, _job_id=job_id, _queue_name=self.queue_name, **kwargs)

    def submit(self, job: str, **kwargs: Any) -> None:
        task = asyncio.create_task(self._hand_over(job, kwargs), name=f"enqueue:{job}")
        self._handing.add(task)
        task.add_done_callback(self._handing.discard)

    async def _hand_over(self, job: str, kwargs: dict[str, Any]) -> None:
        # Redis may blip: a few quick tries before the job is lost (logged, without arguments).
        for pause in (0.2, 1.0, 3.0, None):
            try:
                await self.enqueue(job, **kwargs)
            except Exception:
                if pause is None:
                    log.exception("could not enqueue job %s; it is lost", job)
                    return
                await asyncio.sleep(pause)
            else:
                return

    async def worker_seen(self) -> bool:
        """Whether a ``travelbot worker`` on this queue reported in lately (arq's health key)."""
        return bool(await self._pool.exists(self.queue_name + HEALTH_SUFFIX))

    @property
    def pending(self) -> int:
        return len(self._handing)

    async def drain(self) -> None:
        while self._handing:
            await asyncio.gather(*self._handing, return_exceptions=True)

    async def close(self, grace: float = 10.0) -> None:
        if self._handing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), timeout=grace)
        if self._owns_pool:
            await self._pool.aclose()


class ArqRunner:
    """The worker side: arq's ``Worker`` over the catalogue, plus the tickers."""

    def __init__(
        self,
        catalogue: JobCatalogue,
        *,
        redis_url: str,
        queue_name: str,
        job_timeout: float = 300.0,
        in_progress_margin: float = 10.0,
        poll_delay: float = 0.5,
        max_jobs: int = 10,
        health_check_interval: float = 30.0,
    ) -> None:
        self.catalogue = catalogue
        self.queue_name = queue_name
        self._redis_url = redis_url
        self._job_timeout = job_timeout
        self._margin = in_progress_margin
        self._poll_delay = poll_delay
        self._max_jobs = max_jobs
        self._health = health_check_interval
        self._tickers: list[asyncio.Task[None]] = []
        self._worker: Worker | None = None
        self._main: asyncio.Task[None] | None = None
        self._pool: ArqRedis | None = None

    def functions(self) -> list[Function]:
        functions = [self._task_function(job) for job in self.catalogue.tasks.values()]
        functions += [self._tick_function(job) for job in self.catalogue.scheduled.values()]
        return functions

    def _task_function(self, job: TaskJob) -> Function:
        async def run(ctx: dict[str, Any], **kwargs: Any) -> None:
            try:
                await try_task(job, kwargs, int(ctx.get("job_try", 1)))
            except RetryLaterError as later:
                raise Retry(defer=later.pause) from later.__cause__

        # arq's own try limit above ours: a worker killed mid-try also counts as a try.
        return func(run, name=job.name, max_tries=job.backoff.attempts + 3, keep_result=60)

    def _tick_function(self, job: ScheduledJob) -> Function:
        async def run(ctx: dict[str, Any]) -> bool:
            return await run_tick(job)

        # The result (and so the tick's id) outlives a few intervals: a late ticker's enqueue
        # of a finished tick is refused instead of running it again.
        keep = max(job.interval * 4, 10.0)
        return func(run, name=job.name, max_tries=3, keep_result=keep)

    async def start(self) -> None:
        settings = redis_settings(self._redis_url)
        self._pool = await create_pool(settings, default_queue_name=self.queue_name)
        worker = Worker(
            functions=cast(Any, self.functions()),
            queue_name=self.queue_name,
            redis_pool=self._pool,
            handle_signals=False,
            max_jobs=self._max_jobs,
            job_timeout=self._job_timeout,
            poll_delay=self._poll_delay,
            health_check_interval=self._health,
            keep_result=60,
        )
        # arq keeps a job "in progress" for its timeout plus 10 s; ours is a setting so that a
        # killed worker's job is picked up sooner where jobs are short.
        worker.in_progress_timeout_s = self._job_timeout + self._margin
        self._worker = worker
        self._main = asyncio.create_task(worker.async_run(), name="arq-worker")
        for job in self.catalogue.scheduled.values():
            self._tickers.append(asyncio.create_task(self._ticker(job), name=f"tick:{job.name}"))

    async def _ticker(self, job: ScheduledJob) -> None:
        assert self._pool is not None
        _, due = tick_id(self.queue_name, job.name, job.interval, time.time())
        while True:
            await asyncio.sleep(max(due - time.time(), 0))
            job_id, due = tick_id(self.queue_name, job.name, job.interval, time.time())
            try:
                await self._pool.enqueue_job(job.name, _job_id=job_id, _queue_name=self.queue_name)
            except Exception:  # Redis away: this tick is skipped, the next one tried
                log.warning("could not enqueue tick %s", job_id, exc_info=True)

    async def stop(self) -> None:
        """Stop ticking and taking jobs; jobs in progress finish (within their timeout)."""
        for ticker in self._tickers:
            ticker.cancel()
        await asyncio.gather(*self._tickers, return_exceptions=True)
        self._tickers.clear()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.allow_pick_jobs = False
            if self._main is not None:
                self._main.cancel()
                await asyncio.gather(self._main, return_exceptions=True)
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
            with contextlib.suppress(Exception):
                await worker.pool.delete(worker.health_check_key)
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
