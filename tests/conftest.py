"""Test session setup: real PostgreSQL and Redis must be there, and nothing may reach the internet."""

from __future__ import annotations

import os
import socket

import pytest

# PTB 22 warns on every RetryAfter unless told to use timedeltas; tests turn warnings into errors.
os.environ.setdefault("PTB_TIMEDELTA", "true")

pytest_plugins = [
    "tests.support.infra",
    "tests.support.supabase_stack",
    "tests.support.redis_db",
    "tests.support.flowkit",
]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail the whole run at once, with the fix, when a required service is down."""
    missing = []
    if not _reachable("127.0.0.1", 5432):
        missing.append(
            "PostgreSQL is not reachable on 127.0.0.1:5432; start it with "
            "'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'"
        )
    if not _reachable("127.0.0.1", 6379):
        missing.append(
            "Redis is not reachable on 127.0.0.1:6379; start it with "
            "'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\"'"
        )
    if missing:
        raise pytest.UsageError("\n".join(missing))
