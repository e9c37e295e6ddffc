"""The retention job as the sweep runs it: hourly, again at once while a batch was full, and
with cutoffs from the settings (on both storage adapters)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.config import SettingsError, load_settings
from services.models import AuditEntry, utcnow
from services.retention import RetentionJob, RetentionPolicy
from services.storage.base import Storage


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


async def refused_attempts(storage: Storage, count: int) -> None:
    for n in range(count):
        await storage.append_audit(AuditEntry(admin_id=77, action="denied", target=f"/x{n}"))


async def test_the_job_runs_hourly_and_again_at_once_while_rows_are_left(
    storage: Storage,
) -> None:
    clock = Clock()
    policy = RetentionPolicy(denied_audit=timedelta(days=1))
    job = RetentionJob(storage, policy, batch=2, clock=clock)
    await refused_attempts(storage, 3)

    # Today's rows are younger than a day: the first sweep runs the job and deletes nothing.
    assert await job.run_due() == {"admin_audit": 0, "payment_events": 0, "flight_searches": 0}
    clock.now += timedelta(minutes=1)
    assert await job.run_due() is None  # not due for an hour

    clock.now += timedelta(days=2)  # the rows are now two days old
    assert (await job.run_due() or {})["admin_audit"] == 2  # a full batch...
    clock.now += timedelta(minutes=1)
    assert (await job.run_due() or {})["admin_audit"] == 1  # ...so the next minute goes on
    clock.now += timedelta(minutes=1)
    assert await job.run_due() is None
    assert await storage.list_audit() == []


def test_retention_periods_come_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env
    for name in ("RETENTION_DENIED_AUDIT_DAYS", "RETENTION_PAYMENT_EVENTS_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RETENTION_SEARCHES_DAYS", "120")
    policy = load_settings().retention
    assert policy == RetentionPolicy(
        denied_audit=timedelta(days=30),
        payment_events=timedelta(days=90),
        searches=timedelta(days=120),
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RETENTION_PAYMENT_EVENTS_DAYS", "3"),  # Stripe still retries and resends
        ("RETENTION_SEARCHES_DAYS", "7"),  # /stats 30d still reads them
        ("RETENTION_DENIED_AUDIT_DAYS", "0"),
    ],
)
def test_a_retention_shorter_than_what_still_needs_the_rows_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value).startswith(f"{name}: ")
