"""The job catalogue: every piece of background work the bot does, in one place.

``register_jobs`` fills the catalogue that both job queues run (services/jobs): the embedded
one in this process on timers (no REDIS_URL, the console), arq's in ``travelbot worker``
processes. A feature's scheduled work is one line here (plus its service on ``Services``)::

    jobs.every(tick, "<feature>.<what>", services.<feature>.<method>)

Every job must be safe to run twice (a worker killed mid-job has it run again elsewhere): the
services below only make conditional transitions and hold leases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.config import Settings
from services.jobs.base import JobCatalogue

if TYPE_CHECKING:
    from bot.bootstrap import Services

SEND_BROADCAST = "broadcasts.send"


def register_jobs(jobs: JobCatalogue, settings: Settings, services: Services) -> None:
    tick = settings.sweep_interval_seconds  # SWEEP_INTERVAL_SECONDS, a minute by default
    bookings = services.bookings
    # Unpaid bookings whose deadline passed without a webhook (and the sandbox's, which has no
    # timer of its own).
    jobs.every(tick, "bookings.expire_overdue", bookings.expire_overdue)
    # Payments taken but never ticketed (RECONCILE_AFTER_SECONDS), then refund claims.
    jobs.every(tick, "bookings.reconcile", bookings.reconcile)
    # What /deletedata kept for a trip that is now over.
    jobs.every(tick, "bookings.erase_held_data", bookings.erase_held_data)
    # Broadcasts whose sender died (its lease ran out) carry on.
    jobs.every(tick, "broadcasts.adopt", services.broadcasts.adopt)
    # Old rows of the tables that only grow: hourly, checked every tick (services/retention.py).
    jobs.every(tick, "retention", services.retention.run_due)
    # Check-in-opens and travel-day reminders, each claimed (an insert) before it is sent.
    jobs.every(tick, "reminders.send_due", services.reminders.send_due)
    # Price alerts whose check is due: every five ticks (5 minutes, the search cache's life),
    # each alert claimed by a compare-and-set before it is checked.
    jobs.every(5 * tick, "alerts.check_due", services.alerts.check_due)

    # One-off work, enqueued by the services.
    jobs.task(SEND_BROADCAST, services.broadcasts.send)
    services.receipts.register(jobs)  # the confirmation and refund emails, retried
