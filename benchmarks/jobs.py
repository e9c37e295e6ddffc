"""Job queue figures: enqueue→start latency and no-op jobs a second, embedded and on arq.

Run from the project root:
    uv run python -m benchmarks.jobs [--redis redis://127.0.0.1:6379/0] [--jobs 2000]

Embedded: the in-process adapter (one asyncio task per job). arq: one ``ArqRunner`` (the
``travelbot worker``'s, with its default 0.5 s poll and 10 jobs at once) in this process on the
real Redis, under a queue of its own whose keys are deleted afterwards. Latency is p50/p99 of
``enqueue`` returning → the job body starting, one job at a time at random moments; throughput is ``--jobs``
enqueued at once until the last has run. arq's latency is mostly its poll delay (about half of
it on average), which is why a scheduled tick's jitter is well under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import time
from typing import Any

from redis.asyncio import Redis

from services.jobs.arq_queue import ArqJobs, ArqRunner, job_keys_pattern
from services.jobs.base import JobCatalogue, JobQueue
from services.jobs.embedded import EmbeddedJobs


class Probe:
    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.wanted = 0
        self.all_done = asyncio.Event()

    async def __call__(self, n: int, **_: Any) -> None:
        self.started[n] = time.perf_counter()
        if len(self.started) >= self.wanted:
            self.all_done.set()


async def measure(jobs: JobQueue, probe: Probe, samples: int, burst: int) -> dict[str, float]:
    latencies = []
    for n in range(samples):
        probe.started.clear()
        probe.wanted = 1
        probe.all_done.clear()
        # At a random moment of the worker's poll cycle, as a chat's enqueue would come.
        await asyncio.sleep(random.uniform(0, 0.5))
        sent = time.perf_counter()
        await jobs.enqueue("probe", n=n)
        await asyncio.wait_for(probe.all_done.wait(), 10)
        latencies.append((probe.started[n] - sent) * 1000)
    latencies.sort()
    probe.started.clear()
    probe.wanted = burst
    probe.all_done.clear()
    began = time.perf_counter()
    await asyncio.gather(*(jobs.enqueue("probe", n=n) for n in range(burst)))
    await asyncio.wait_for(probe.all_done.wait(), 300)
    elapsed = time.perf_counter() - began
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)],
        "jobs_per_s": burst / elapsed,
    }


def show(name: str, figures: dict[str, float]) -> None:
    print(
        f"{name:<9} enqueue→start p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms"
        f"   {figures['jobs_per_s']:8.0f} jobs/s"
    )


async def main(redis_url: str, samples: int, burst: int) -> None:
    probe = Probe()
    catalogue = JobCatalogue()
    catalogue.task("probe", probe)
    embedded = EmbeddedJobs(catalogue)
    show("embedded", await measure(embedded, probe, samples, burst))
    await embedded.close()

    queue = f"bench-{secrets.token_hex(4)}:jobs"
    runner = ArqRunner(catalogue, redis_url=redis_url, queue_name=queue)
    jobs = await ArqJobs.connect(redis_url, queue)
    await runner.start()
    try:
        show("arq", await measure(jobs, probe, samples, burst))
    finally:
        await runner.stop()
        await jobs.close()
        client = Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(match=job_keys_pattern(queue))]
        keys += [k async for k in client.scan_iter(match=f"{queue}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--samples", type=int, default=40, help="jobs timed one at a time")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs enqueued at once")
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.samples, args.jobs))
