"""The job queue's two adapters: the embedded one (timers in this process) and arq's on the real
Redis (a queue name of the test's own, its keys deleted afterwards). Scheduled ticks run on
their interval, once per tick however many runners share the queue; a task that fails with a
retryable error is tried again after its backoff and given up on after its attempts; a failing
job stops no other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from redis.asyncio import Redis

from services.jobs.arq_queue import ArqJobs, ArqRunner, job_keys_pattern
from services.jobs.base import Backoff, JobCatalogue
from services.jobs.embedded import EmbeddedJobs


class FlakyError(Exception):
    """What a job raises when the thing it talks to is away for now (retried)."""


class Recorder:
    """A job body that fails its first ``failures`` calls, and what happened to it."""

    def __init__(self, failures: int = 0, error: type[Exception] = FlakyError) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []
        self.done: list[dict[str, Any]] = []
        self.given_up: list[tuple[str, Mapping[str, Any]]] = []
        self.finished = asyncio.Event()

    async def __call__(self, **kwargs: Any) -> None:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise self.error(f"try {len(self.calls)}")
        self.done.append(kwargs)
        self.finished.set()

    async def gave_up(self, error: BaseException, kwargs: Mapping[str, Any]) -> None:
        self.given_up.append((str(error), kwargs))
        self.finished.set()


def ticking(counts: dict[str, list[float]], name: str, *, fail: bool = False) -> Any:
    async def tick() -> None:
        counts.setdefault(name, []).append(time.time())
        if fail:
            raise RuntimeError("this tick always fails")

    return tick


# embedded --------------------------------------------------------------------------------------
async def test_embedded_ticks_run_on_their_interval_and_a_failing_one_stops_no_other() -> None:
    counts: dict[str, list[float]] = {}
    catalogue = JobCatalogue()
    catalogue.every(0.05, "good", ticking(counts, "good"))
    catalogue.every(0.05, "bad", ticking(counts, "bad", fail=True))
    jobs = EmbeddedJobs(catalogue)
    jobs.start()
    await asyncio.sleep(0.4)
    await jobs.close()
    ran = len(counts["good"])
    assert 4 <= ran <= 9
    assert len(counts["bad"]) >= 4  # it failed every time and kept its timer
    await asyncio.sleep(0.15)
    assert len(counts["good"]) == ran  # closed: no tick after close


async def test_embedded_task_retries_with_growing_pauses_then_succeeds() -> None:
    body = Recorder(failures=2)
    catalogue = JobCatalogue()
    catalogue.task("send", body, backoff=Backoff(attempts=4, first=0.05, longest=1.0))
    jobs = EmbeddedJobs(catalogue)
    jobs.submit("send", booking_id="b-1")
    assert jobs.pending == 1
    await jobs.drain()

    assert body.done == [{"booking_id": "b-1"}]
    first, second, third = body.calls
    assert second - first >= 0.05  # first pause: first..2*first
    assert third - second >= 0.1  # doubled
    assert body.given_up == []


async def test_embedded_task_gives_up_after_its_attempts_and_ignores_other_errors() -> None:
    flaky = Recorder(failures=10)
    broken = Recorder(failures=10, error=ValueError)
    catalogue = JobCatalogue()
    catalogue.task(
        "flaky",
        flaky,
        backoff=Backoff(attempts=3, first=0.01, longest=0.02),
        retry_on=(FlakyError,),
        gave_up=flaky.gave_up,
    )
    catalogue.task(
        "broken", broken, backoff=Backoff(attempts=3, first=0.01), retry_on=(FlakyError,)
    )
    jobs = EmbeddedJobs(catalogue)
    await jobs.enqueue("flaky", booking_id="b-2")
    await jobs.enqueue("broken")
    await jobs.drain()

    assert len(flaky.calls) == 3
    assert flaky.given_up == [("try 3", {"booking_id": "b-2"})]
    assert len(broken.calls) == 1  # not a retryable error: one try, logged


def test_a_catalogue_refuses_a_name_twice_and_an_interval_of_zero() -> None:
    catalogue = JobCatalogue()
    catalogue.every(1, "tick", ticking({}, "tick"))
    with pytest.raises(ValueError, match="already"):
        catalogue.task("tick", Recorder())
    with pytest.raises(ValueError, match="positive"):
        catalogue.every(0, "other", ticking({}, "other"))


# arq on real Redis -----------------------------------------------------------------------------
@pytest.fixture
async def queue_name(redis_url: str, redis_prefix: str) -> AsyncIterator[str]:
    name = f"{redis_prefix}:jobs"
    yield name
    client = Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=job_keys_pattern(name))]
        keys += [k async for k in client.scan_iter(match=f"{name}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def runner(catalogue: JobCatalogue, redis_url: str, queue_name: str) -> ArqRunner:
    return ArqRunner(
        catalogue,
        redis_url=redis_url,
        queue_name=queue_name,
        job_timeout=5,
        in_progress_margin=1,
        poll_delay=0.02,
    )


async def test_arq_runs_an_enqueued_task_retrying_it_with_backoff(
    redis_url: str, queue_name: str
) -> None:
    body = Recorder(failures=2)
    catalogue = JobCatalogue()
    catalogue.task(
        "send", body, backoff=Backoff(attempts=4, first=0.1, longest=1), retry_on=(FlakyError,)
    )
    worker = runner(catalogue, redis_url, queue_name)
    jobs = await ArqJobs.connect(redis_url, queue_name)
    await worker.start()
    try:
        await jobs.enqueue("send", booking_id="b-3", amount=2_000)
        await asyncio.wait_for(body.finished.wait(), 10)
    finally:
        await worker.stop()
        await jobs.close()

    assert body.done == [{"booking_id": "b-3", "amount": 2_000}]
    first, second, third = body.calls
    assert second - first >= 0.1
    assert third - second >= 0.2


async def test_arq_gives_up_after_the_attempts_and_a_failing_job_stops_no_other(
    redis_url: str, queue_name: str
) -> None:
    hopeless = Recorder(failures=100)
    fine = Recorder()
    catalogue = JobCatalogue()
    catalogue.task(
        "hopeless",
        hopeless,
        backoff=Backoff(attempts=3, first=0.05, longest=0.1),
        retry_on=(FlakyError,),
        gave_up=hopeless.gave_up,
    )
    catalogue.task("fine", fine)
    worker = runner(catalogue, redis_url, queue_name)
    jobs = await ArqJobs.connect(redis_url, queue_name)
    await worker.start()
    try:
        jobs.submit("hopeless", booking_id="b-4")
        await jobs.drain()
        await asyncio.wait_for(hopeless.finished.wait(), 10)
        await jobs.enqueue("fine", n=1)
        await asyncio.wait_for(fine.finished.wait(), 10)
    finally:
        await worker.stop()
        await jobs.close()

    assert len(hopeless.calls) == 3
    assert hopeless.given_up == [("try 3", {"booking_id": "b-4"})]
    assert fine.done == [{"n": 1}]


async def test_arq_ticks_run_once_each_across_two_runners_and_survive_a_failing_job(
    redis_url: str, queue_name: str
) -> None:
    interval = 0.25
    counts: dict[str, list[float]] = {}
    runners = []
    for _ in range(2):  # two workers on one queue, each with its own tickers
        catalogue = JobCatalogue()
        catalogue.every(interval, "sweep", ticking(counts, "sweep"))
        catalogue.every(interval, "bad", ticking(counts, "bad", fail=True))
        runners.append(runner(catalogue, redis_url, queue_name))
    for worker in runners:
        await worker.start()
    started = time.time()
    await asyncio.sleep(2.1)
    for worker in runners:
        await worker.stop()
    elapsed = time.time() - started

    ticks = [int(t // interval) for t in counts["sweep"]]
    assert len(ticks) == len(set(ticks))  # never twice in one tick
    assert len(ticks) >= int(elapsed / interval) - 2  # and (almost) every tick ran
    assert len(counts["bad"]) >= int(elapsed / interval) - 2  # failing every time, still ticking


async def test_a_worker_is_seen_while_it_runs(redis_url: str, queue_name: str) -> None:
    catalogue = JobCatalogue()
    catalogue.task("noop", Recorder())
    jobs = await ArqJobs.connect(redis_url, queue_name)
    try:
        assert not await jobs.worker_seen()
        worker = runner(catalogue, redis_url, queue_name)
        await worker.start()
        try:
            deadline = time.monotonic() + 5
            while not await jobs.worker_seen():
                assert time.monotonic() < deadline, "the worker never reported in"
                await asyncio.sleep(0.05)
        finally:
            await worker.stop()
        assert not await jobs.worker_seen()  # a clean stop takes its health key away
    finally:
        await jobs.close()
