"""Real ``travelbot worker`` processes (the arq job queue) for tests that kill them.

``JobWorkers`` starts N workers on one Redis queue and one database (a SQLite file, or the
PostgREST stack of tests/support/supabase_stack.py), with Telegram as a sandbox Bot API in the
test and any other stand-in's settings in ``extra``; waits until each runs jobs, kills one
(SIGKILL), stops the rest and deletes the queue's keys. A worker's log shows what it ran: arq
writes ``→ <job id>:<name>()`` when a job starts (`` try=2`` on a retry) and ``← <job id>``
when it ends, so ``started``/``finished`` tell which tick ran where.

Reuse: a feature's scheduled job (a price alert, a reminder) is tested the same way: start two
workers with a short SWEEP_INTERVAL_SECONDS, make one item due, and assert the chat got exactly
one message.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from services.jobs.arq_queue import job_keys_pattern
from tests.support.supabase_stack import SupabaseStack

READY_LINE = "travelbot worker: running jobs from queue"
# What a worker may inherit from whoever runs the tests: nothing that picks an adapter.
_ADAPTER_SETTINGS = ("REDIS", "SUPABASE", "STRIPE", "TELEGRAM", "KIWI", "DATABASE_URL", "PUBLIC_")
# "→ <id>:<name>()" at a start, "← <id>:<name> ●" at the end; ids have colons of their own.
_JOB_LINE = re.compile(r"[→←] (?P<id>\S+):(?P<name>[a-z_.]+)(?:\(|\s)")


def bot_environment(
    *,
    token: str,
    telegram_url: str,
    redis_url: str,
    redis_prefix: str,
    sqlite_path: Path,
    supabase: SupabaseStack | None = None,
) -> dict[str, str]:
    """What every bot process a test starts is given (``travelbot worker`` here, ``travelbot
    webhook`` in tests/test_workers.py): the caller's environment but anything that picks an
    adapter, the sandbox Bot API, one Redis prefix, one database and demo fares."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_ADAPTER_SETTINGS)}
    env = {
        **inherited,
        "PTB_TIMEDELTA": "true",
        "TELEGRAM_BOT_TOKEN": token,
        "TELEGRAM_API_BASE_URL": telegram_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "SQLITE_PATH": str(sqlite_path),
        "FLIGHT_PROVIDER": "demo",
        "LOG_LEVEL": "INFO",
    }
    if supabase is not None:
        env["SUPABASE_URL"] = supabase.url
        env["SUPABASE_SERVICE_ROLE_KEY"] = supabase.service_key
        env["DATA_ENCRYPTION_KEYS"] = supabase.data_key
    return env


@dataclass
class JobWorker:
    name: str
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def problems(self) -> list[str]:
        """ERROR lines, but arq's own for a job it ran (a failing tick is a WARNING of ours)."""
        return [line for line in self.output().splitlines() if " ERROR " in line]

    def started(self, job: str) -> list[str]:
        """Ids of the runs of ``job`` this worker started, in order (a retry again)."""
        return self._ids("→", job)

    def finished(self, job: str) -> list[str]:
        return self._ids("←", job)

    def retried(self, job: str) -> list[str]:
        return [
            m.group("id")
            for line in self.output().splitlines()
            if "→" in line and "try=" in line and (m := _JOB_LINE.search(line))
            if m.group("name") == job
        ]

    def _ids(self, arrow: str, job: str) -> list[str]:
        return [
            m.group("id")
            for line in self.output().splitlines()
            if arrow in line and (m := _JOB_LINE.search(line)) and m.group("name") == job
        ]

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} did not start:\n{self.output()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    async def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"worker {self.name} ignored SIGTERM:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.process.returncode


@dataclass
class JobWorkers:
    """Settings every worker of one test shares, and the workers started so far."""

    folder: Path
    token: str
    telegram_url: str
    redis_url: str
    redis_prefix: str
    supabase: SupabaseStack | None = None
    extra: dict[str, str] = field(default_factory=dict)
    workers: list[JobWorker] = field(default_factory=list)

    @property
    def queue_name(self) -> str:
        return f"{self.redis_prefix}:jobs"

    @property
    def sqlite_path(self) -> Path:
        return self.folder / "bot.sqlite3"

    def environment(self) -> dict[str, str]:
        env = bot_environment(
            token=self.token,
            telegram_url=self.telegram_url,
            redis_url=self.redis_url,
            redis_prefix=self.redis_prefix,
            sqlite_path=self.sqlite_path,
            supabase=self.supabase,
        )
        env |= {
            "JOB_QUEUE_NAME": self.queue_name,
            # Quick ticks, and a killed worker's job taken over within seconds.
            "SWEEP_INTERVAL_SECONDS": "0.5",
            "JOB_TIMEOUT_SECONDS": "2",
        }
        return {**env, **self.extra}

    def spawn(self, name: str) -> JobWorker:
        log = self.folder / f"jobworker-{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(  # reaped by stop() or kill()
                [sys.executable, "-m", "bot", "worker"],
                cwd=self.folder,  # no stray .env from the checkout
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = JobWorker(name=name, log=log, process=process)
        self.workers.append(worker)
        return worker

    async def start(self, count: int) -> list[JobWorker]:
        started = [self.spawn(chr(ord("a") + len(self.workers))) for _ in range(count)]
        await asyncio.gather(*(worker.ready() for worker in started))
        return started

    def alive(self) -> list[JobWorker]:
        return [w for w in self.workers if w.process.poll() is None]

    def running(self, job: str) -> JobWorker | None:
        """The live worker that started a run of ``job`` it has not finished, if any."""
        for worker in self.alive():
            if set(worker.started(job)) - set(worker.finished(job)):
                return worker
        return None

    async def close(self) -> None:
        for worker in self.alive():
            await worker.stop()
        client = Redis.from_url(self.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=job_keys_pattern(self.queue_name))]
            keys += [k async for k in client.scan_iter(match=f"{self.redis_prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
