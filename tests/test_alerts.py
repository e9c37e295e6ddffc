"""Price alerts: watching a route from the results, /alerts, and the scheduled check.

The flow at the engine seam (tests/support/flowkit.py); the check (``AlertService.check_due``)
on real storage, SQLite and Supabase (fixture ``storage``), with the search service and its
cache as production wires them and demo fares a test moves (tests/support/fares.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from conversations.flows.alerts import PriceTextError, parse_target
from services.alert_models import AlertStatus, PriceAlert
from services.alerts import RETRY_AFTER, AlertLimitError, AlertService
from services.cache import MemoryCache
from services.flights.places import PlaceIndex
from services.flights.search import FlightSearchService
from services.models import SearchQuery, today_anywhere
from services.money import Money
from services.notify import MemoryNotifier
from services.storage import Storage
from tests.support.days import Clock
from tests.support.fares import ScriptedFares
from tests.support.flowkit import (
    DAYS_AHEAD,
    TRAVELLER_ID,
    Chat,
    SeamKit,
    fixed_clock,
    open_seam,
    to_results,
)
from tests.support.supabase_stack import StorageFactory

EVERY = timedelta(hours=3)
LATER = EVERY * 1.2  # past any alert's spread: every alert checked is due again


# --- the check, on real storage --------------------------------------------------------------


@dataclass
class Rig:
    """One worker's alert check: its service, the fares it sees, what it sent."""

    service: AlertService
    fares: ScriptedFares
    notifier: MemoryNotifier
    clock: Clock
    places: PlaceIndex
    storage: Storage

    def query(self, destination: str = "FCO", days: int = 30) -> SearchQuery:
        return SearchQuery(
            origin=self.places.airport_location("LIS"),
            destination=self.places.airport_location(destination),
            departure=today_anywhere(self.clock()) + timedelta(days=days),
            currency="EUR",
        )

    async def cheapest(self, query: SearchQuery) -> Money:
        found = await self.service._search.search(query, user_id=None, log=False)
        return min((it.price for it in found.itineraries), key=lambda price: price.amount)

    async def watch(
        self, user_id: int, query: SearchQuery, *, below: int | None = None
    ) -> tuple[PriceAlert, Money]:
        """Watch ``query`` for ``below`` minor units under today's cheapest fare (None: any
        drop). The alert and that cheapest fare."""
        now = await self.cheapest(query)
        target = Money(amount=now.amount - below, currency="EUR") if below is not None else None
        alert, _ = await self.service.watch(user_id, query, target=target, lowest=now)
        return alert, now

    async def run_later(self, span: timedelta = LATER) -> int:
        self.clock.advance(span)
        return await self.service.check_due()

    def texts(self, user_id: int) -> list[str]:
        return [message.text for message in self.notifier.to(user_id)]


def frozen_fares(places: PlaceIndex, clock: Clock) -> ScriptedFares:
    """Demo fares priced as on the first day (the demo's fares move as a flight comes
    closer): between two checks a fare changes only as the test says."""
    first_day = today_anywhere(clock())
    return ScriptedFares(places=places, today=lambda: first_day, clock=clock)


def make_rig(storage: Storage, places: PlaceIndex, clock: Clock, **options: int) -> Rig:
    fares = frozen_fares(places, clock)
    cache = MemoryCache(clock=lambda: clock().timestamp())  # its period runs on the test clock
    notifier = MemoryNotifier()
    service = AlertService(
        storage,
        FlightSearchService(fares, cache, storage),
        notifier,
        max_per_user=options.get("max_per_user", 5),
        searches_per_run=options.get("searches_per_run", 20),
        check_every=EVERY,
        clock=clock,
    )
    return Rig(service, fares, notifier, clock, places, storage)


@pytest.fixture
def rig(storage: Storage, places: PlaceIndex) -> Rig:
    return make_rig(storage, places, fixed_clock())


async def test_a_fare_at_the_target_is_told_once_and_a_further_drop_again(rig: Rig) -> None:
    query = rig.query()
    alert, now = await rig.watch(1, query, below=10_00)

    assert await rig.service.check_due() == 0  # not due yet
    assert await rig.run_later() == 1
    assert rig.texts(1) == []  # still above the target

    rig.fares.cut = 12_00
    await rig.run_later()
    (told,) = rig.notifier.to(1)
    cheaper = Money(amount=now.amount - 12_00, currency="EUR")
    assert "Lisbon" in told.text
    assert "Rome" in told.text
    assert f"now <b>{cheaper.format()}</b>" in told.text
    assert f"your target: {alert.target.format() if alert.target else ''}" in told.text
    assert f"{query.departure:%a} {query.departure.day} {query.departure:%b}" in told.text
    assert told.buttons[0][0].action == "!alopen"
    assert told.buttons[0][0].arg == str(alert.id)

    await rig.run_later()
    await rig.run_later()
    assert len(rig.texts(1)) == 1  # the same price again: nothing new

    rig.fares.cut = 20_00
    await rig.run_later()
    assert len(rig.texts(1)) == 2
    assert Money(amount=now.amount - 20_00, currency="EUR").format() in rig.texts(1)[1]
    stored = await rig.storage.get_alert(alert.id)
    assert stored is not None
    assert stored.last_notified_minor == now.amount - 20_00


async def test_when_it_drops_means_below_the_lowest_fare_seen(rig: Rig) -> None:
    _, now = await rig.watch(1, rig.query())
    await rig.run_later()
    assert rig.texts(1) == []

    rig.fares.cut = 5_00
    await rig.run_later()
    assert len(rig.texts(1)) == 1
    assert Money(amount=now.amount - 5_00, currency="EUR").format() in rig.texts(1)[0]

    rig.fares.cut = 0  # back up, then down to the same low: not a new drop
    await rig.run_later()
    rig.fares.cut = 5_00
    await rig.run_later()
    assert len(rig.texts(1)) == 1

    rig.fares.cut = 5_01
    await rig.run_later()
    assert len(rig.texts(1)) == 2


async def test_alerts_on_one_route_cost_one_provider_call_per_cache_period(rig: Rig) -> None:
    query = rig.query()
    for user in range(1, 6):
        await rig.watch(user, query, below=1_00)
    await rig.watch(6, rig.query("MAD"), below=1_00)
    before = rig.fares.searches

    assert await rig.run_later() == 6
    assert rig.fares.searches - before == 2  # one per route, for six alerts

    assert await rig.run_later() == 6  # a new cache period: one call per route again
    assert rig.fares.searches - before == 4


async def test_a_run_searches_at_most_its_allowance_and_the_rest_wait_oldest_first(
    storage: Storage, places: PlaceIndex
) -> None:
    rig = make_rig(storage, places, fixed_clock(), searches_per_run=2)
    made: list[PriceAlert] = []
    for destination in ("FCO", "MAD", "BCN", "CDG", "AMS"):
        alert, _ = await rig.watch(1 if len(made) < 3 else 2, rig.query(destination), below=1)
        made.append(alert)
        rig.clock.advance(timedelta(minutes=1))  # each one due a minute after the one before
    rig.clock.advance(LATER)
    start = rig.clock()
    before = rig.fares.searches

    checked = []
    for _ in range(3):
        due = {a.id for a in await storage.list_due_alerts(start, limit=10)}
        assert await rig.service.check_due() == min(2, len(due))
        now_due = {a.id for a in await storage.list_due_alerts(start, limit=10)}
        checked.append(due - now_due)
    assert rig.fares.searches - before == 5
    assert checked == [{made[0].id, made[1].id}, {made[2].id, made[3].id}, {made[4].id}]

    # Each waits its interval again, spread over a tenth of it so they drift apart.
    stored = [await storage.get_alert(a.id) for a in made]
    waits = {a.next_check_at - start for a in stored if a is not None}
    assert all(EVERY <= wait <= EVERY * 1.1 for wait in waits)
    assert len(waits) > 1


async def test_a_rate_limited_provider_skips_the_run_and_the_alert_comes_back_soon(
    rig: Rig,
) -> None:
    query = rig.query()
    alerts = [(await rig.watch(user, query, below=1_00))[0] for user in (1, 2, 3)]
    rig.fares.unavailable = True
    before = rig.fares.searches

    assert await rig.run_later() == 0
    assert rig.fares.searches - before == 1  # not asked again for the same route this run
    for alert in alerts:
        stored = await rig.storage.get_alert(alert.id)
        assert stored is not None
        assert stored.next_check_at == rig.clock() + RETRY_AFTER
        assert stored.status is AlertStatus.ACTIVE

    rig.fares.unavailable = False
    rig.fares.cut = 2_00
    assert await rig.run_later(RETRY_AFTER) == 3
    assert [len(rig.texts(user)) for user in (1, 2, 3)] == [1, 1, 1]


async def test_an_alert_ends_once_its_travel_date_has_passed(rig: Rig) -> None:
    query = rig.query(days=2)
    alert, _ = await rig.watch(1, query, below=1_00)
    for days in (30, 31, 32):
        await rig.watch(1, rig.query("MAD", days=days), below=1_00)
    rig.clock.advance(timedelta(days=4))

    await rig.service.check_due()
    await rig.run_later()
    (ended,) = [text for text in rig.texts(1) if "has ended" in text]
    assert "Lisbon Humberto Delgado → Rome Fiumicino · " in ended
    stored = await rig.storage.get_alert(alert.id)
    assert stored is not None
    assert stored.status is AlertStatus.FINISHED
    assert alert.id not in [a.id for a in await rig.service.alerts_of(1)]
    # The cap counts the alerts still running: two more fit now.
    await rig.watch(1, rig.query("BCN"), below=1_00)
    await rig.watch(1, rig.query("AMS"), below=1_00)
    with pytest.raises(AlertLimitError):
        await rig.watch(1, rig.query("CDG"), below=1_00)


async def test_blocked_users_get_no_alerts_and_no_search_is_made_for_them(rig: Rig) -> None:
    query = rig.query("MAD")
    await rig.watch(1, query, below=1_00)
    await rig.storage.upsert_profile(1, first_name="Ana")
    assert await rig.storage.set_blocked(1, True)
    rig.fares.cut = 5_00
    before = rig.fares.searches

    await rig.run_later()
    assert rig.texts(1) == []
    assert rig.fares.searches == before

    await rig.storage.set_blocked(1, False)
    await rig.run_later()
    assert len(rig.texts(1)) == 1


async def test_a_traveller_keeps_at_most_the_allowed_alerts(rig: Rig) -> None:
    made = [(await rig.watch(1, rig.query(days=d), below=1_00))[0] for d in range(20, 25)]
    with pytest.raises(AlertLimitError):
        await rig.watch(1, rig.query(days=26), below=1_00)
    assert await rig.service.delete(1, made[0].id)
    await rig.watch(1, rig.query(days=26), below=1_00)


async def test_two_workers_checking_at_once_tell_each_traveller_once(
    storage: Storage, storage_factory: StorageFactory, places: PlaceIndex
) -> None:
    clock = fixed_clock()
    first = make_rig(storage, places, clock)
    second = make_rig(await storage_factory.open(), places, clock)  # another process's view
    query = first.query()
    users = range(1, 9)
    for user in users:
        await first.watch(user, query, below=1_00)
    for rig in (first, second):
        rig.fares.cut = 3_00
    clock.advance(LATER)

    for _ in range(3):  # several rounds: a lost race must not turn into a late duplicate
        await asyncio.gather(first.service.check_due(), second.service.check_due())
        clock.advance(LATER)

    for user in users:
        assert len(first.texts(user)) + len(second.texts(user)) == 1, user


# --- the typed target ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "amount"),
    [
        ("150", 150_00),
        ("€150", 150_00),
        ("under 150", 150_00),
        ("Under €149.99", 149_99),
        ("below 150 eur", 150_00),
        ("150,50", 150_50),
        ("1,250", 1250_00),
        ("1 250.00 EUR", 1250_00),
        ("< 99", 99_00),
    ],
)
def test_a_target_is_read_in_the_searchs_currency(typed: str, amount: int) -> None:
    assert parse_target(typed, "EUR") == Money(amount=amount, currency="EUR")


@pytest.mark.parametrize(
    ("typed", "currency", "refusal"),
    [
        ("cheap please", "EUR", "I need a price."),
        ("$150", "EUR", "Fares here are in EUR"),
        ("150 GBP", "EUR", "Fares here are in EUR"),
        ("0", "EUR", "more than 0"),
        ("12.3456", "EUR", "EUR has 2 decimals"),
        ("12000.5", "JPY", "JPY has no decimals"),
        ("99999999", "EUR", "more than any fare"),
        ("1" + " " * 5000 + "x", "EUR", "I need a price."),
    ],
)
def test_what_is_not_a_target_is_refused_saying_why(
    typed: str, currency: str, refusal: str
) -> None:
    with pytest.raises(PriceTextError, match=refusal):
        parse_target(typed, currency)


# --- the flow at the engine seam -------------------------------------------------------------


@pytest.fixture
async def kit(tmp_path: Path, places: PlaceIndex) -> AsyncIterator[SeamKit]:
    clock = fixed_clock()
    fares = frozen_fares(places, clock)
    async with open_seam(tmp_path, places=places, clock=clock, provider=fares) as kit:
        yield kit


def fares_of(kit: SeamKit) -> ScriptedFares:
    provider = kit.services.adapters.provider
    assert isinstance(provider, ScriptedFares)
    return provider


def departure(kit: SeamKit) -> date:
    return kit.day(DAYS_AHEAD)


async def test_watching_a_route_from_the_results_then_hearing_of_a_drop(kit: SeamKit) -> None:
    chat = await to_results(kit)
    asked = await chat.press("Watch this route")
    assert asked.state == "alerts:target"
    assert "Watch Lisbon" in asked.text
    assert "The cheapest fare now is" in asked.text

    refused = await chat.say("150 USD")
    assert "Fares here are in EUR" in refused.text
    assert await chat.state() == "alerts:target"

    done = await chat.say("under 80")
    assert done.state == "search:results"
    assert "I'll tell you when" in done.text
    assert "€80.00 or less" in done.text
    assert "Tap a number" in done.text  # the results again, their buttons live

    listed = await chat.say("/alerts")
    assert "Your price alerts</b> (1 of 5)" in listed.html
    assert "at or under €80.00" in listed.text
    assert await chat.state() == "search:results"  # /alerts leaves the chat where it was

    (alert,) = await kit.services.alerts.alerts_of(TRAVELLER_ID)
    fares = fares_of(kit)
    cheapest = alert.lowest
    assert cheapest is not None
    fares.cut = cheapest.amount - 79_00
    kit.clock.advance(LATER)
    await kit.services.alerts.check_due()
    (told,) = chat.notifications()
    assert "Price drop" in told
    assert "now €79.00" in told

    opened = await chat.press("See flights")
    assert opened.state == "search:results"
    assert "1. €79 ·" in opened.text
    stopped = await chat.press("Stop this alert")
    assert "Alert stopped" in stopped.text
    assert await kit.services.alerts.alerts_of(TRAVELLER_ID) == []


async def test_tell_me_when_it_drops_starts_from_the_cheapest_fare_shown(kit: SeamKit) -> None:
    chat = await to_results(kit)
    await chat.press("Watch this route")
    done = await chat.press("Tell me when it drops")
    (alert,) = await kit.services.alerts.alerts_of(TRAVELLER_ID)
    assert alert.target is None
    assert alert.lowest is not None
    assert f"drops below {alert.lowest.format()}" in done.text
    assert done.state == "search:results"


async def test_back_from_the_target_question_shows_the_results_and_watches_nothing(
    kit: SeamKit,
) -> None:
    chat = await to_results(kit)
    await chat.press("Watch this route")
    back = await chat.press("Back to results")
    assert back.state == "search:results"
    assert await kit.services.alerts.alerts_of(TRAVELLER_ID) == []


async def watch_other_days(kit: SeamKit, chat: Chat, count: int) -> None:
    """Alerts on ``count`` other days of the route the chat shows results for."""
    shown = SearchQuery.model_validate((await chat.record()).data["results"]["query"])
    for days in range(1, count + 1):
        other = shown.model_copy(update={"departure": shown.departure + timedelta(days=days)})
        await kit.services.alerts.watch(
            TRAVELLER_ID, other, target=Money(amount=100_00, currency="EUR"), lowest=None
        )


async def test_watching_a_watched_route_again_replaces_its_alert(kit: SeamKit) -> None:
    chat = await to_results(kit)
    await watch_other_days(kit, chat, 4)  # one short of the cap
    await chat.press("Watch this route")
    await chat.say("100")
    again = await chat.press("Watch this route")  # at the cap, but this route is watched
    assert again.state == "alerts:target"
    done = await chat.say("90")
    assert "€90.00 or less (instead of your earlier alert on it)" in done.text
    alerts = await kit.services.alerts.alerts_of(TRAVELLER_ID)
    assert len(alerts) == 5
    assert sorted(a.target.amount for a in alerts if a.target) == [90_00] + [100_00] * 4


async def test_the_sixth_alert_is_refused_saying_how_to_delete_one(kit: SeamKit) -> None:
    chat = await to_results(kit)
    await watch_other_days(kit, chat, 5)
    refused = await chat.press("Watch this route")
    assert "You already watch 5 routes" in refused.text
    assert "Delete one in /alerts" in refused.text
    assert refused.state == "search:results"

    await chat.say("/alerts")
    deleted = await chat.press("Delete 1")
    assert deleted.toast == "Deleted."
    assert "(4 of 5)" in deleted.text
    asked = await chat.press("Watch this route")
    assert asked.state == "alerts:target"


async def test_pausing_and_resuming_from_the_list(kit: SeamKit) -> None:
    chat = await to_results(kit)
    await chat.press("Watch this route")
    await chat.say("90")
    await chat.say("/alerts")
    paused = await chat.press("Pause 1")
    assert "paused" in paused.text
    assert "▶️ Resume 1" in paused.labels
    (alert,) = await kit.services.alerts.alerts_of(TRAVELLER_ID)
    assert alert.status is AlertStatus.PAUSED
    kit.clock.advance(LATER)
    assert await kit.services.alerts.check_due() == 0  # a paused alert is not checked

    resumed = await chat.press("Resume 1")
    assert "paused" not in resumed.text
    assert await kit.services.alerts.check_due() == 1  # due at once


async def test_someone_elses_alert_cannot_be_touched(kit: SeamKit) -> None:
    chat = await to_results(kit)
    await chat.press("Watch this route")
    await chat.say("90")
    (alert,) = await kit.services.alerts.alerts_of(TRAVELLER_ID)
    other = kit.chat(TRAVELLER_ID + 1, "Eve")
    for action in ("!aldel", "!alpause", "!alopen"):
        reply = await other.press_data(f"{action}|{alert.id}")
        assert "no longer" in reply.toast
    assert await kit.services.alerts.alerts_of(TRAVELLER_ID) == [alert]


async def test_mydata_lists_the_alerts_and_deletedata_erases_them(kit: SeamKit) -> None:
    chat = await to_results(kit)
    await chat.press("Watch this route")
    await chat.say("90")
    mydata = await chat.say("/mydata")
    assert "Price alerts" in mydata.text
    assert "at or under €90.00" in mydata.text

    asked = await chat.say("/deletedata")
    assert "price alerts" in asked.text
    await chat.press("Yes, erase my data")
    assert await kit.services.alerts.alerts_of(TRAVELLER_ID) == []
