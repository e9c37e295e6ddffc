"""Background work: scheduled ticks and retried one-off jobs, behind one port.

``base`` holds the catalogue (what runs, when, how it is retried) and the ``JobQueue`` port;
``embedded`` runs the catalogue in this process on timers (no Redis: the console, a single
process); ``arq_queue`` puts the jobs on Redis for ``travelbot worker`` processes (arq).
"""

from services.jobs.base import Backoff, JobCatalogue, JobQueue, ScheduledJob, TaskJob

__all__ = ["Backoff", "JobCatalogue", "JobQueue", "ScheduledJob", "TaskJob"]
