"""The image's liveness probe (Dockerfile HEALTHCHECK), for each process the image runs.

A web process answers ``/healthz``; a ``travelbot worker`` serves no HTTP, so it touches a
heartbeat file while its event loop lives, and the probe reads how old that is. Without this the
one HEALTHCHECK marked every worker container unhealthy, and an orchestrator that restarts
unhealthy containers (Swarm) would restart it every minute and a half. Standard library only:
it runs every 30 seconds, in its own interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HEARTBEAT_EVERY = 10.0  # seconds between a worker's touches
STALE_AFTER = 90.0  # three probes' worth: a worker that many seconds silent is stuck


def heartbeat_file() -> Path:
    """Per machine (a container has its own temporary folder); TMPDIR moves it."""
    return Path(tempfile.gettempdir()) / "travelbot-worker.alive"


async def beat(path: Path | None = None, *, every: float = HEARTBEAT_EVERY) -> None:
    """Touch the heartbeat until cancelled, then remove it: a stopped worker is not alive."""
    target = path or heartbeat_file()
    try:
        while True:
            target.touch()
            await asyncio.sleep(every)
    finally:
        target.unlink(missing_ok=True)


def worker_alive(path: Path | None = None, *, stale_after: float = STALE_AFTER) -> bool:
    try:
        age = time.time() - (path or heartbeat_file()).stat().st_mtime
    except FileNotFoundError:
        return False
    return age <= stale_after


def web_alive(port: int, *, timeout: float = 4.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout):
            return True
    except OSError:  # refused, timed out, or an HTTP error status
        return False


def runs_worker(cmdline: Path = Path("/proc/1/cmdline")) -> bool:
    """Whether the container's main process is ``travelbot worker`` (the image's CMD is
    ``travelbot webhook`` unless the deployment names another command)."""
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"worker" in args[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.liveness", description=__doc__)
    role = parser.add_mutually_exclusive_group()
    role.add_argument("--worker", action="store_true", help="probe a worker's heartbeat")
    role.add_argument("--web", action="store_true", help="probe /healthz on PORT")
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER, help="seconds")
    args = parser.parse_args(argv)
    worker = args.worker or (not args.web and runs_worker())
    if worker:
        alive = worker_alive(stale_after=args.stale_after)
    else:
        alive = web_alive(int(os.environ.get("PORT", "8080")))
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
