"""Retention: the tables that only grow lose their old rows, a batch at a time.

What goes and after how long is settings (``RETENTION_*_DAYS``): refused admin attempts,
payment events of no live booking (Stripe retries a delivery for up to three days and its
dashboard resends events up to 30 days old, so the ledger keeps at least 30 days and 90 by
default), and the search log (the admin statistics look back 30 days at most, so at least 31).
Bookings, profiles and admin actions are never deleted here.

The scheduled job ``retention`` (bot/jobs.py) calls ``run_due`` every tick; a run happens once an
hour, and again at the next tick while a table still had a full batch to delete. On the arq queue
each tick runs on one worker, but each worker keeps its own hour, so a fleet may delete a little
more often than hourly: deleting is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.models import utcnow
from services.storage.base import PURGE_BATCH, Storage

log = logging.getLogger(__name__)

STATS_LOOKBACK = timedelta(days=30)  # the longest /stats period
STRIPE_RESEND_WINDOW = timedelta(days=30)  # how old an event Stripe may still (re)send


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    denied_audit: timedelta = timedelta(days=30)
    payment_events: timedelta = timedelta(days=90)
    searches: timedelta = timedelta(days=90)

    def __post_init__(self) -> None:
        if self.payment_events <= STRIPE_RESEND_WINDOW:
            raise ValueError("payment events must be kept longer than Stripe may resend them")
        if self.searches <= STATS_LOOKBACK:
            raise ValueError("searches must be kept longer than the statistics look back")
        if self.denied_audit <= timedelta(0):
            raise ValueError("refused admin attempts must be kept for some time")


class RetentionJob:
    def __init__(
        self,
        storage: Storage,
        policy: RetentionPolicy,
        *,
        every: timedelta = timedelta(hours=1),
        batch: int = PURGE_BATCH,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._storage = storage
        self._policy = policy
        self._every = every
        self._batch = batch
        self._now = clock
        self._next: datetime | None = None  # the first sweep runs it

    async def run_due(self) -> dict[str, int] | None:
        """Run when due; what was deleted per table, or None when it was not due."""
        now = self._now()
        if self._next is not None and now < self._next:
            return None
        deleted = await self.run(now)
        more = any(count >= self._batch for count in deleted.values())
        self._next = now if more else now + self._every
        return deleted

    async def run(self, now: datetime | None = None) -> dict[str, int]:
        """One batch per table, each with its own cutoff."""
        moment = now or self._now()
        policy = self._policy
        deleted = await self._storage.delete_expired_records(
            denied_audit_before=moment - policy.denied_audit,
            payment_events_before=moment - policy.payment_events,
            searches_before=moment - policy.searches,
            limit=self._batch,
        )
        if any(deleted.values()):
            log.info("retention deleted %s", ", ".join(f"{n} {t}" for t, n in deleted.items()))
        return deleted
