"""The search flow as a traveller meets it: places, dates, calendar, travellers, results, re-price."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from services.flights.demo import DemoProvider
from services.flights.places import PlaceIndex
from services.flights.results import SortKey, sort_itineraries
from services.models import Passengers, SearchQuery, today_anywhere
from services.money import Money
from tests.support.botkit import BotKit, running_bot
from tests.support.days import Clock, coming_weekday_at
from tests.test_conversation_e2e import (
    fill_traveller,
    to_departure,
    to_field,
    to_results,
    to_travellers,
)

USER = 6001


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[BotKit]:
    async with running_bot(tmp_path) as kit:
        yield kit


async def test_a_city_with_several_airports_offers_them_all(bot: BotKit) -> None:
    await bot.say(USER, "/start")
    reply = await bot.say(USER, "london")
    labels = [b[0] for b in bot.buttons(USER)]
    assert "Which one" in reply.text
    assert labels[0].startswith("London (all airports)")
    assert any("(LHR)" in label for label in labels)
    await bot.press(USER, "London (all airports)")
    assert (await bot.state(USER)).data["search"]["origin"]["code"] == "LON"


@pytest.mark.parametrize(
    ("typed", "code"), [("lisbn", "LIS"), ("JFK", "JFK"), ("Sao Paulo", "SAO")]
)
async def test_typos_codes_and_accents_resolve(bot: BotKit, typed: str, code: str) -> None:
    await bot.say(USER, "/start")
    await bot.say(USER, typed)
    state = await bot.state(USER)
    if state.state == "search:origin":  # offered as a choice: take the first
        await bot.press(USER, bot.buttons(USER)[0][0])
        state = await bot.state(USER)
    assert state.state == "search:destination"
    assert code in (
        state.data["search"]["origin"]["code"],
        *state.data["search"]["origin"]["airports"],
    )


async def test_an_unknown_place_says_so_and_stays(bot: BotKit) -> None:
    await bot.say(USER, "/start")
    reply = await bot.say(USER, "Qwxzvbn")
    assert "couldn't find" in reply.text
    assert (await bot.state(USER)).state == "search:origin"


async def test_the_same_place_twice_is_refused(bot: BotKit) -> None:
    await bot.say(USER, "/start")
    await bot.say(USER, "LIS")
    reply = await bot.say(USER, "Lisbon")
    assert "already flying from" in reply.text
    assert (await bot.state(USER)).state == "search:destination"


async def test_a_past_date_is_refused_with_the_first_day_allowed(bot: BotKit) -> None:
    await to_departure(bot, USER)
    yesterday = today_anywhere() - timedelta(days=1)
    reply = await bot.say(USER, yesterday.isoformat())
    assert "passed" in reply.text
    assert (await bot.state(USER)).state == "search:departure"


async def test_a_return_before_departure_is_refused(bot: BotKit) -> None:
    await bot.say(USER, "/start")
    await bot.say(USER, "LIS")
    await bot.say(USER, "FCO")
    await bot.press(USER, "Add a return date")
    out = today_anywhere() + timedelta(days=60)
    await bot.say(USER, out.isoformat())
    reply = await bot.say(USER, (out - timedelta(days=3)).isoformat())
    assert "before" in reply.text.lower()
    assert (await bot.state(USER)).state == "search:return"
    await bot.say(USER, (out + timedelta(days=7)).isoformat())
    assert (await bot.state(USER)).state == "search:results"


async def test_the_calendar_pages_and_picks_a_day(bot: BotKit) -> None:
    await to_departure(bot, USER)
    calendar = bot.sandbox.bot_messages(USER)[-1]
    await bot.press(USER, "›")
    paged = bot.sandbox.message(USER, calendar.message_id)
    assert paged.edit_count == 1  # paging edits the calendar in place
    day = next(
        b.label
        for row in paged.buttons
        for b in row
        if b.label.split("·")[0].isdigit() and b.callback_data and "|day|" in b.callback_data
    )
    await bot.press(USER, day)
    assert (await bot.state(USER)).state == "search:results"


async def test_travellers_stepper_keeps_the_airline_rules(bot: BotKit) -> None:
    await to_travellers(bot, USER)
    await bot.press(USER, "+")  # adults: 2
    assert "Adults (12+): 2" in [b[0] for b in bot.buttons(USER)]
    # infants may not outnumber adults

    async def add_infant() -> str | None:
        _, data, message_id = next(b for b in bot.buttons(USER) if (b[1] or "").endswith("|i+"))
        return (await bot.press_raw(USER, message_id, data or "")).notice

    assert await add_infant() is None
    assert await add_infant() is None
    refusal = await add_infant()
    assert refusal is not None
    assert "infants" in refusal
    assert (await bot.state(USER)).data["search"]["infants"] == 2


async def test_results_page_sort_and_filter_in_place(bot: BotKit) -> None:
    await to_results(bot, USER)
    results = bot.sandbox.bot_messages(USER)[-1]
    assert "demo fares" in results.text
    prices = [int(p.replace(",", "")) for p in re.findall(r"€([\d,]+)", results.text)]
    assert prices == sorted(prices)
    await bot.press(USER, "Fastest")
    fastest = bot.sandbox.message(USER, results.message_id)
    assert fastest.edit_count >= 1
    assert "✓ Fastest" in str(fastest.buttons)
    await bot.press(USER, "Direct only")
    direct = bot.sandbox.message(USER, results.message_id)
    assert "stop" not in direct.text.replace("non-stop", "") or "direct" in direct.text
    if "Next ›" in str(direct.buttons):
        await bot.press(USER, "Next ›")
        assert "Page 2 of" in bot.sandbox.message(USER, results.message_id).text


async def test_detail_shows_every_segment_and_the_total(bot: BotKit) -> None:
    await to_field(bot, USER)
    detail = bot.sandbox.bot_messages(USER)[-1].text
    assert "Total €" in detail
    assert re.search(r"\d\d:\d\d [A-Z]{3}", detail)
    assert "Demo fare" in detail


async def test_readyz_reports_each_port(bot: BotKit) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{bot.base_url}/readyz") as response:
        body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["ports"]["storage"] == {"adapter": "sqlite", "ok": True}
    assert body["ports"]["flights"]["adapter"] == "demo"


# --- re-price -----------------------------------------------------------------------------


async def _first_offer(days: int = 90) -> tuple[str, Money]:
    """The itinerary the traveller will pick first (cheapest) on the path used by the tests."""
    places = PlaceIndex.default()
    query = SearchQuery(
        origin=places.airport_location("LIS"),
        destination=places.airport_location("FCO"),
        departure=today_anywhere() + timedelta(days=days),
        passengers=Passengers(),
        currency="EUR",
    )
    offers = sort_itineraries(await DemoProvider(places=places).search(query), SortKey.PRICE)
    return offers[0].id, offers[0].price


async def test_a_changed_price_is_shown_with_the_choice_to_continue(tmp_path: Path) -> None:
    offer_id, price = await _first_offer()
    higher = Money(amount=price.amount + 2500, currency=price.currency)
    provider = DemoProvider(places=PlaceIndex.default(), price_changes={offer_id: higher})
    async with running_bot(tmp_path, provider=provider) as bot:
        await to_results(bot, USER)
        reply = await bot.press(USER, "1")
        assert "price has changed" in reply.text
        assert higher.format() in reply.text
        assert (await bot.state(USER)).state == "book:price"
        await bot.press(USER, "Continue at")
        state = await bot.state(USER)
        assert state.state == "book:field"
        assert state.data["booking"]["itinerary"]["price"]["amount"] == higher.amount


async def test_a_sold_out_offer_goes_back_to_the_results(tmp_path: Path) -> None:
    offer_id, _ = await _first_offer()
    provider = DemoProvider(places=PlaceIndex.default(), sold_out=[offer_id])
    async with running_bot(tmp_path, provider=provider) as bot:
        await to_results(bot, USER)
        reply = await bot.press(USER, "1")
        assert "sold out" in reply.text
        assert (await bot.state(USER)).state == "search:results"


async def test_a_slow_search_shows_typing_before_the_results_arrive(tmp_path: Path) -> None:
    from bot.sandbox import EventKind

    slow = DemoProvider(places=PlaceIndex.default(), latency=0.8)
    async with running_bot(tmp_path, provider=slow) as bot:
        await to_departure(bot, USER)
        since = bot.sandbox.last_seq
        await bot.say(USER, (today_anywhere() + timedelta(days=90)).isoformat())
        kinds = [
            e.kind
            for e in bot.sandbox.events(
                since, kinds={EventKind.CHAT_ACTION, EventKind.BOT_EDIT, EventKind.BOT_MESSAGE}
            )
            if e.chat_id == USER
        ]
    assert kinds[0] is EventKind.CHAT_ACTION
    assert EventKind.BOT_MESSAGE in kinds[1:] or EventKind.BOT_EDIT in kinds[1:]


async def test_a_quick_search_answers_without_a_typing_call(bot: BotKit) -> None:
    from bot.sandbox import EventKind

    await to_travellers(bot, USER)
    since = bot.sandbox.last_seq
    reply = await bot.press(USER, "Search flights")
    assert "demo fares" in reply.text  # the results header, at once
    events = [e for e in bot.sandbox.events(since) if e.chat_id == USER]
    assert not [e for e in events if e.kind is EventKind.CHAT_ACTION]
    assert [e for e in events if e.kind in (EventKind.BOT_EDIT, EventKind.BOT_MESSAGE)]


# --- "today" and flights that have left ------------------------------------------------------


async def _to_date_step(bot: BotKit, origin: str, destination: str) -> None:
    await bot.say(USER, "/start")
    await bot.say(USER, origin)
    await bot.say(USER, destination)


async def test_today_is_the_departure_airports_date_not_anywhere_on_earths(
    tmp_path: Path,
) -> None:
    # 07:54 UTC on a Wednesday: Wednesday afternoon in Tokyo, Tuesday evening on UTC-12.
    wednesday = coming_weekday_at(2, 7, 54)
    async with running_bot(tmp_path, clock=Clock(wednesday)) as bot:
        await _to_date_step(bot, "NRT", "LIS")
        calendar = str(bot.sandbox.bot_messages(USER)[-1].buttons)
        assert f"'•{wednesday.day}·" in calendar  # the calendar marks Wednesday as today
        await bot.say(USER, "today")
        assert (await bot.state(USER)).data["search"]["departure"] == wednesday.date().isoformat()
        await _to_date_step(bot, "NRT", "LIS")
        await bot.say(USER, "tomorrow")
        thursday = wednesday.date() + timedelta(days=1)
        assert (await bot.state(USER)).data["search"]["departure"] == thursday.isoformat()


async def test_only_a_day_past_at_the_departure_airport_is_refused(tmp_path: Path) -> None:
    wednesday = coming_weekday_at(2, 7, 54)
    tuesday = (wednesday - timedelta(days=1)).date().isoformat()
    async with running_bot(tmp_path, clock=Clock(wednesday)) as bot:
        await _to_date_step(bot, "LIS", "FCO")
        reply = await bot.say(USER, tuesday)
        assert "passed" in reply.text  # Tuesday is over in Lisbon
        await _to_date_step(bot, "HNL", "LAX")
        await bot.say(USER, tuesday)  # 21:54 on Tuesday in Honolulu: still today there
        assert (await bot.state(USER)).data["search"]["departure"] == tuesday


def _listed_departures(text: str) -> list[str]:
    return re.findall(r"(\d\d:\d\d) LIS", text)


async def test_flights_that_have_left_or_leave_within_two_hours_are_not_listed(
    tmp_path: Path,
) -> None:
    # 15:00 in Lisbon (UTC+0 in winter, +1 in summer): nothing before 17:00 local may show.
    afternoon = coming_weekday_at(2, 14, 0)
    async with running_bot(tmp_path, clock=Clock(afternoon)) as bot:
        await _to_date_step(bot, "LIS", "MAD")
        await bot.say(USER, "today")
        await bot.press(USER, "Earliest")
        shown = _listed_departures(bot.sandbox.bot_messages(USER)[-1].text)
        local_limit = (afternoon + timedelta(hours=2)).astimezone(ZoneInfo("Europe/Lisbon"))
        assert all(time_ >= f"{local_limit:%H:%M}" for time_ in shown), shown


async def test_pay_for_a_flight_that_has_left_meanwhile_says_so_plainly(tmp_path: Path) -> None:
    clock = Clock(coming_weekday_at(2, 6, 0))
    async with running_bot(tmp_path, clock=clock) as bot:
        await _to_date_step(bot, "LIS", "MAD")
        await bot.say(USER, "today")
        await bot.press(USER, "Earliest")
        await bot.press(USER, "1")
        await fill_traveller(bot, USER)
        assert (await bot.state(USER)).state == "book:review"
        clock.advance(timedelta(hours=20))  # the flight left while the review was open
        reply = await bot.press(USER, "Pay")
        assert "went wrong" not in reply.text
        assert "too soon to book" in reply.text
        assert (await bot.state(USER)).state == "search:results"


# --- fewer turns ------------------------------------------------------------------------------


async def test_a_whole_search_in_one_message_goes_straight_to_the_results(bot: BotKit) -> None:
    out = today_anywhere() + timedelta(days=70)
    while out.day <= 12:  # written day first, a day over 12 cannot be a month
        out += timedelta(days=1)
    back = out + timedelta(days=1)
    while back.day != 3:  # '3/02': day and month could swap, but the departure said day first
        back += timedelta(days=1)
    await bot.say(USER, "/start")
    reply = await bot.say(USER, f"LIS-NRT {out:%d/%m} return {back.day}/{back:%m} 2 adults")
    state = await bot.state(USER)
    assert state.state == "search:results", reply.text
    query = state.data["results"]["query"]
    assert query["origin"]["code"] == "LIS"
    assert query["destination"]["code"] == "NRT"
    assert query["departure"] == out.isoformat()
    assert query["return_date"] == back.isoformat()
    assert query["passengers"] == {"adults": 2, "children": 0, "infants": 0}
    assert "2 adults" in reply.text


async def test_a_city_with_a_date_asks_nothing_else_and_defaults_to_one_adult(
    bot: BotKit,
) -> None:
    await bot.say(USER, "/start")
    reply = await bot.say(USER, "Lisbon to Tokyo on 20 March")
    state = await bot.state(USER)
    assert state.state == "search:results", reply.text
    assert state.data["results"]["query"]["destination"]["code"] == "TYO"  # all airports
    assert state.data["results"]["query"]["return_date"] is None
    assert "1 adult" in reply.text
    await bot.press(USER, "1 adult · change")  # the stepper is there when wanted
    assert (await bot.state(USER)).state == "search:travellers"
    await bot.press(USER, "‹ Back to results")
    assert (await bot.state(USER)).state == "search:results"
    await bot.press(USER, "1 adult · change")
    await bot.press(USER, "+")
    again = await bot.press(USER, "Search flights")
    assert "2 adults" in again.text


async def test_a_whole_search_without_a_date_asks_only_the_date(bot: BotKit) -> None:
    await bot.say(USER, "/start")
    reply = await bot.say(USER, "from Berlin to Lisbon")
    assert (await bot.state(USER)).state == "search:departure"
    assert "When do you fly?" in reply.text
    assert "Add a return date" in str(bot.buttons(USER))


async def test_a_return_date_is_added_from_the_date_step(bot: BotKit) -> None:
    await to_departure(bot, USER)
    out = today_anywhere() + timedelta(days=40)
    await bot.say(USER, f"{out.isoformat()} return {(out + timedelta(days=5)).isoformat()}")
    query = (await bot.state(USER)).data["results"]["query"]
    assert query["return_date"] == (out + timedelta(days=5)).isoformat()


async def test_back_buttons_walk_the_search_steps_backwards(bot: BotKit) -> None:
    await to_departure(bot, USER)
    await bot.press(USER, "‹ Back")
    state = await bot.state(USER)
    assert state.state == "search:destination"
    assert state.data["search"]["destination"] is None
    await bot.press(USER, "‹ Back")
    assert (await bot.state(USER)).state == "search:origin"


async def test_a_date_whose_day_and_month_could_swap_is_asked_not_guessed(bot: BotKit) -> None:
    await to_departure(bot, USER)
    today = today_anywhere()
    year = today.year + 1
    reply = await bot.say(USER, f"03/04/{year}")
    assert "Which day do you mean" in reply.text
    assert (await bot.state(USER)).state == "search:departure"
    labels = [label for label, _, _ in bot.buttons(USER)]
    assert any("3 Apr" in label for label in labels)
    assert any("4 Mar" in label for label in labels)
    await bot.press(USER, "4 Mar")
    assert (await bot.state(USER)).data["results"]["query"]["departure"] == f"{year}-03-04"


async def test_a_city_typed_after_cancel_starts_the_search(bot: BotKit) -> None:
    await to_departure(bot, USER)
    await bot.say(USER, "/cancel")
    reply = await bot.say(USER, "Berlin")
    assert "Type /start" not in reply.text
    state = await bot.state(USER)
    assert state.state == "search:destination"
    assert state.data["search"]["origin"]["code"] == "BER"
    nonsense = await bot.say(USER + 1, "qwxzvbn")
    assert "/start" in nonsense.text


async def test_the_calendar_shows_the_cheapest_fare_of_each_day(bot: BotKit) -> None:
    await to_departure(bot, USER)
    await bot.press(USER, "›")  # next month: whole days ahead, none partly flown already
    question = bot.sandbox.bot_messages(USER)[-1]
    assert "cheapest one-way fare that day in EUR" in question.text
    priced = {
        b.label.lstrip("•").split("·")[0]: int(b.label.split("·")[1])
        for b in question.flat_buttons
        if "·" in b.label and b.callback_data and "|day|" in b.callback_data
    }
    assert len(priced) >= 2
    day, fare = min(priced.items(), key=lambda item: item[1])
    await bot.press(
        USER,
        next(b.label for b in question.flat_buttons if b.label.lstrip("•").startswith(f"{day}·")),
    )
    results = bot.sandbox.bot_messages(USER)[-1].text
    cheapest = min(int(p.replace(",", "")) for p in re.findall(r"€([\d,]+)", results))
    assert cheapest == fare  # the calendar's price is the cheapest result of that day
