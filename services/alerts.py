"""Price alerts: a traveller watches a search and hears once per drop of its cheapest fare.

``check_due`` is the scheduled job (run it every few minutes on every worker; see the notes in
README's "Price alerts"). It takes the alerts whose ``next_check_at`` has come, longest waiting
first, and checks each through the shared search service, so any number of alerts on one route
and date cost one provider call per cache period, and at most ``searches_per_run`` provider
calls a run (what is in the cache is free): the rest simply stay due for the next run. An alert
is claimed with a compare-and-set on its version before its search, and its new price is
recorded with another before the message goes out, so two workers running the check at once
never send one drop twice. At most once, not at least once: a worker that dies between the
record and the send loses that message, which beats telling the traveller twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import NamedTuple

from services import metrics
from services.alert_models import AlertStatus, AlertUpdate, NewPriceAlert, PriceAlert
from services.flights.base import ProviderError
from services.flights.dates import format_day
from services.flights.search import FlightSearchService
from services.messages import Button, Message, esc
from services.models import (
    MIN_TIME_BEFORE_DEPARTURE,
    Itinerary,
    SearchQuery,
    today_anywhere,
    utcnow,
)
from services.money import Money
from services.notify import Notifier
from services.storage.base import Storage, StorageUnavailableError

log = logging.getLogger(__name__)

# A check that could not search (rate limit, provider down) comes back this much sooner.
RETRY_AFTER = timedelta(minutes=30)
# Alerts read per run: many share a route or hit the cache, so reading is the cheap part (each
# costs one or two SQL statements); the provider calls are what ``searches_per_run`` bounds.
DUE_PER_RUN = 500


class AlertLimitError(Exception):
    """The traveller already keeps as many alerts as allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} alerts per traveller")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class _Found:
    """One search's answer in a run: the cheapest fare, or why there is none."""

    cheapest: Money | None
    failed: bool = False


def cheapest_fare(
    itineraries: Iterable[Itinerary], now: datetime, query: SearchQuery
) -> Money | None:
    """The lowest fare an alert compares: bookable (leaving late enough, with the seats the
    search asks for) and in the search's currency; the flow starts "when it drops" from it."""
    seats = query.passengers.seats
    prices = [
        it.price
        for it in itineraries
        if it.departure > now + MIN_TIME_BEFORE_DEPARTURE
        and (it.seats_left is None or it.seats_left >= seats)
        and it.price.currency == query.currency
    ]
    return min(prices, key=lambda price: price.amount) if prices else None


class Watched(NamedTuple):
    alert: PriceAlert
    replaced: bool  # the traveller watched this search already: that alert gave way


def _on_search(alerts: Iterable[PriceAlert], query: SearchQuery) -> PriceAlert | None:
    """The alert among ``alerts`` that watches this very search, if any."""
    return next((alert for alert in alerts if alert.search() == query), None)


class AlertService:
    """Creates, lists and changes a traveller's alerts, and checks the due ones."""

    def __init__(
        self,
        storage: Storage,
        search: FlightSearchService,
        notifier: Notifier,
        *,
        max_per_user: int = 5,
        searches_per_run: int = 20,
        check_every: timedelta = timedelta(hours=3),
        batch: int = DUE_PER_RUN,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._storage = storage
        self._search = search
        self._notifier = notifier
        self.max_per_user = max_per_user
        self._searches_per_run = searches_per_run
        self._check_every = check_every
        self._batch = batch
        self._clock = clock

    # --- what the flow asks -------------------------------------------------------------------

    async def watch(
        self, user_id: int, query: SearchQuery, *, target: Money | None, lowest: Money | None
    ) -> Watched:
        """Start watching ``query``: told when its cheapest fare is at or below ``target``, or
        (``target`` None) whenever it drops below the lowest seen, starting from ``lowest``.
        Raises ``AlertLimitError`` when the traveller already keeps ``max_per_user``. Watching
        a search they already watch replaces that alert (a new price, not a second message
        for every drop)."""
        earlier = _on_search(await self.alerts_of(user_id), query)
        if earlier is not None:
            await self._storage.delete_alert(earlier.id, user_id)
        alert = NewPriceAlert.watching(
            user_id,
            query,
            target=target,
            lowest=lowest,
            next_check_at=self._clock() + self._check_every,
        )
        created = await self._storage.create_alert(alert, limit=self.max_per_user)
        if created is None:
            raise AlertLimitError(self.max_per_user)
        return Watched(created, replaced=earlier is not None)

    async def alerts_of(self, user_id: int) -> list[PriceAlert]:
        return await self._storage.list_alerts(user_id)

    async def at_limit(self, user_id: int, query: SearchQuery | None = None) -> bool:
        """Whether one more alert would pass the cap; ``query``, if watched already, would
        replace its alert, so it never does."""
        alerts = await self.alerts_of(user_id)
        if query is not None and _on_search(alerts, query) is not None:
            return False
        return len(alerts) >= self.max_per_user

    async def set_paused(self, user_id: int, alert_id: int, *, paused: bool) -> PriceAlert | None:
        """Pause or resume the traveller's alert (a resumed one is checked at the next run);
        None when it is not theirs, has finished, or changed under us."""
        alert = await self._storage.get_alert(alert_id)
        if alert is None or alert.user_id != user_id or alert.status is AlertStatus.FINISHED:
            return None
        update = (
            AlertUpdate(status=AlertStatus.PAUSED)
            if paused
            else AlertUpdate(status=AlertStatus.ACTIVE, next_check_at=self._clock())
        )
        return await self._storage.update_alert(
            alert.id, expected_version=alert.version, update=update
        )

    async def delete(self, user_id: int, alert_id: int) -> bool:
        return await self._storage.delete_alert(alert_id, user_id)

    async def get(self, user_id: int, alert_id: int) -> PriceAlert | None:
        alert = await self._storage.get_alert(alert_id)
        return alert if alert is not None and alert.user_id == user_id else None

    # --- the scheduled job --------------------------------------------------------------------

    async def check_due(self) -> int:
        """Check the alerts that are due; returns how many were checked against a fare.
        Never raises for a provider or a storage outage (the next run carries on)."""
        try:
            return await self._check_due()
        except StorageUnavailableError:
            log.warning("price alerts: storage unavailable; next run carries on", exc_info=True)
            return 0

    async def _check_due(self) -> int:
        now = self._clock()
        due = await self._storage.list_due_alerts(now, limit=self._batch)
        found: dict[str, _Found] = {}  # by search cache key: one search per route in a run
        provider_calls = 0
        checked = 0
        unreachable: dict[int, bool] = {}
        for alert in due:
            query = alert.search()
            if query is None or alert.departure < today_anywhere(now):
                await self._finish(alert)
                continue
            if await self._unreachable(alert.user_id, unreachable):
                # Blocked by an admin, or the traveller blocked the bot: no search, no message.
                await self._reschedule(alert, now + self._check_every)
                continue
            key = self._search.cache_key(query)
            if key not in found and provider_calls >= self._searches_per_run:
                cached = await self._search.peek(query)
                if cached is None:
                    continue  # out of provider calls this run: stays due, first in line next
                found[key] = _Found(cheapest=cheapest_fare(cached, now, query))
            claimed = await self._reschedule(alert, self._next_check(alert, now))
            if claimed is None:
                continue  # another worker has it
            if key not in found:
                found[key], called = await self._look_up(query, now)
                provider_calls += called
            result = found[key]
            if result.failed:
                await self._reschedule(claimed, now + RETRY_AFTER)
                continue
            checked += 1
            if result.cheapest is not None:
                await self._compare(claimed, query, result.cheapest)
        return checked

    async def _look_up(self, query: SearchQuery, now: datetime) -> tuple[_Found, int]:
        """The cheapest fare of ``query``, and whether the provider was called for it."""
        try:
            outcome = await self._search.search(query, user_id=None, log=False)
        except ProviderError:
            # Rate limited or down: this alert skips the run; the provider is not asked again
            # for the same route in this run either.
            log.info("price alerts: the provider refused a search; retrying later")
            return _Found(cheapest=None, failed=True), 1
        return _Found(cheapest=cheapest_fare(outcome.itineraries, now, query)), int(
            not outcome.cached
        )

    def _next_check(self, alert: PriceAlert, now: datetime) -> datetime:
        """The interval, plus up to a tenth of it by the alert's id: alerts made together
        drift apart instead of falling due in the same run forever."""
        spread = self._check_every * ((alert.id * 7919) % 100) / 1000
        return now + self._check_every + spread

    async def _reschedule(self, alert: PriceAlert, when: datetime) -> PriceAlert | None:
        return await self._storage.update_alert(
            alert.id, expected_version=alert.version, update=AlertUpdate(next_check_at=when)
        )

    async def _unreachable(self, user_id: int, known: dict[int, bool]) -> bool:
        if user_id not in known:
            profile = await self._storage.get_profile(user_id)
            known[user_id] = profile is not None and (profile.blocked or profile.bot_blocked)
        return known[user_id]

    async def _compare(self, alert: PriceAlert, query: SearchQuery, cheapest: Money) -> None:
        lowest = alert.lowest
        target = alert.target
        if target is not None:
            last = alert.last_notified
            drop = cheapest <= target and (last is None or cheapest < last)
        else:
            drop = lowest is not None and cheapest < lowest
        new_lowest = cheapest if lowest is None or cheapest < lowest else lowest
        if not drop:
            if new_lowest != lowest:
                await self._storage.update_alert(
                    alert.id,
                    expected_version=alert.version,
                    update=AlertUpdate(lowest_minor=new_lowest.amount),
                )
            return
        # The compare-and-set decides who tells the traveller: only its winner sends.
        won = await self._storage.update_alert(
            alert.id,
            expected_version=alert.version,
            update=AlertUpdate(lowest_minor=new_lowest.amount, last_notified_minor=cheapest.amount),
        )
        if won is not None:
            await self._send(alert.user_id, drop_message(won, query, cheapest), "sent")

    async def _finish(self, alert: PriceAlert) -> None:
        ended = await self._storage.update_alert(
            alert.id,
            expected_version=alert.version,
            update=AlertUpdate(status=AlertStatus.FINISHED),
        )
        if ended is not None and not await self._unreachable(alert.user_id, {}):
            await self._send(alert.user_id, ended_message(ended), "ended")

    async def _send(self, user_id: int, message: Message, outcome: str) -> None:
        try:
            delivered = await self._notifier.notify(user_id, message)
        except Exception:  # one traveller's failed message must not stop the others' checks
            log.warning("price alerts: could not send a message", exc_info=True)
            metrics.price_alert("failed")
            return
        if not delivered:
            await self._storage.set_bot_blocked(user_id, True)
            metrics.price_alert("bot_blocked")
            return
        metrics.price_alert(outcome)


# --- what the traveller reads -------------------------------------------------------------------


def describe(alert: PriceAlert, *, today: date | None = None) -> str:
    """'LIS → FCO · Wed 10 Mar · under €150.00' (or '· when it drops'), HTML-escaped."""
    query = alert.search()
    origin = query.origin.name if query else alert.origin
    destination = query.destination.name if query else alert.destination
    day = format_day(alert.departure, today=today)
    target = alert.target
    wanted = f"at or under {target.format()}" if target else "when it drops"
    return f"{esc(origin)} → {esc(destination)} · {day} · {wanted}"


def drop_message(alert: PriceAlert, query: SearchQuery, price: Money) -> Message:
    route = f"{esc(query.origin.name)} → {esc(query.destination.name)}"
    target = alert.target
    why = f" (your target: {target.format()})" if target else ""
    return Message(
        text=(
            f"🔔 <b>Price drop</b>: {route}, {format_day(alert.departure)}, "
            f"{esc(query.passengers.describe())}: now <b>{price.format()}</b>{why}."
        ),
        buttons=(
            (Button(label="✈️ See flights", action="!alopen", arg=str(alert.id)),),
            (Button(label="🔕 Stop this alert", action="!alstop", arg=str(alert.id)),),
        ),
    )


def ended_message(alert: PriceAlert) -> Message:
    return Message(
        text=(
            f"🔕 Your price alert for {describe(alert)} has ended: the travel date has passed. "
            "/alerts lists the others."
        )
    )
