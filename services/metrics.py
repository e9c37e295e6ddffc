"""Prometheus metrics: what an operator graphs and alerts on, served at ``GET /metrics``.

Every hook elsewhere is one call into this module, so the code it measures reads the same
with or without it. Labels are closed sets (a kind, an outcome, a provider's name): never a
user id, a reference or a route, so no personal data reaches a scrape and series stay few.
Each worker process keeps its own counts; Prometheus adds them up across workers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from services.flights.base import ProviderUnavailableError

REGISTRY = CollectorRegistry()  # ours alone: a test or a library's metrics never mix in

UPDATES = Counter(
    "travelbot_updates",
    "Telegram updates handled, by kind (message, callback_query, other) and outcome.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
TURN_SECONDS = Histogram(
    "travelbot_turn_seconds",
    "Time from an update's arrival to the bot's last reply to it.",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
PROVIDER_CALLS = Counter(
    "travelbot_provider_calls",
    "Calls to the flight provider, by provider, operation and outcome (ok, unavailable, error).",
    ["provider", "operation", "outcome"],
    registry=REGISTRY,
)
PROVIDER_SECONDS = Histogram(
    "travelbot_provider_call_seconds",
    "Time a flight provider call took.",
    ["provider", "operation"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
SEARCH_CACHE = Counter(
    "travelbot_search_cache_lookups",
    "Flight searches answered from the cache (hit) or by a provider call (miss).",
    ["result"],
    registry=REGISTRY,
)
PAYMENTS = Counter(
    "travelbot_payments",
    "Payment outcomes: link_created, paid, confirmed, ticketing_failed, expired, refunded.",
    ["outcome"],
    registry=REGISTRY,
)
BROADCAST_DELIVERIES = Counter(
    "travelbot_broadcast_deliveries",
    "Broadcast messages handled, by outcome (sent, bot_blocked, failed).",
    ["outcome"],
    registry=REGISTRY,
)
PRICE_ALERTS = Counter(
    "travelbot_price_alerts",
    "Price alert messages, by outcome (sent, bot_blocked, failed, ended).",
    ["outcome"],
    registry=REGISTRY,
)

REMINDERS = Counter(
    "travelbot_reminders",
    "Trip reminders handled, by kind (checkin, departure, return_checkin, return_departure) "
    "and outcome (sent, skipped, bot_blocked, failed).",
    ["kind", "outcome"],
    registry=REGISTRY,
)

PAYMENT_OUTCOMES = ("link_created", "paid", "confirmed", "ticketing_failed", "expired", "refunded")


def update_handled(kind: str, outcome: str, seconds: float) -> None:
    UPDATES.labels(kind, outcome).inc()
    TURN_SECONDS.observe(seconds)


@contextmanager
def provider_call(provider: str, operation: str) -> Iterator[None]:
    """Count and time the provider call in the block; ``ProviderUnavailableError`` counts as
    'unavailable' (timeouts, 5xx, 429, open circuit), any other exception as 'error'."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except ProviderUnavailableError:
        outcome = "unavailable"
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        PROVIDER_CALLS.labels(provider, operation, outcome).inc()
        PROVIDER_SECONDS.labels(provider, operation).observe(time.perf_counter() - started)


def search_cache(*, hit: bool) -> None:
    SEARCH_CACHE.labels("hit" if hit else "miss").inc()


def payment(outcome: str) -> None:
    PAYMENTS.labels(outcome).inc()


def broadcast_delivery(outcome: str) -> None:
    BROADCAST_DELIVERIES.labels(outcome).inc()


def reminder(kind: str, outcome: str) -> None:
    REMINDERS.labels(kind, outcome).inc()


def price_alert(outcome: str) -> None:
    PRICE_ALERTS.labels(outcome).inc()


def _prime() -> None:
    """Zero series for the known label values, so a rate() has a start before the first one."""
    for outcome in PAYMENT_OUTCOMES:
        PAYMENTS.labels(outcome)
    for result in ("hit", "miss"):
        SEARCH_CACHE.labels(result)
    for outcome in ("sent", "bot_blocked", "failed"):
        BROADCAST_DELIVERIES.labels(outcome)
    for kind in ("checkin", "departure", "return_checkin", "return_departure"):
        for outcome in ("sent", "skipped", "bot_blocked", "failed"):
            REMINDERS.labels(kind, outcome)
    for outcome in ("sent", "bot_blocked", "failed", "ended"):
        PRICE_ALERTS.labels(outcome)


_prime()


def exposition() -> tuple[bytes, str]:
    """The text format body and its content type, for the web route."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
