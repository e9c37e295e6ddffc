"""The search flow at the engine seam: places, dates, calendar, travellers, results, re-price."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.flights.places import PlaceIndex
from tests.support.days import Clock, coming_weekday_at
from tests.support.flowkit import (
    DAYS_AHEAD,
    REPRICE,
    REPRICED_ROUTE,
    SOLD_OUT_ROUTE,
    TRAVELLER_ID,
    Chat,
    SeamKit,
    cheapest_offer,
    open_seam,
    pick_arg,
    scripted_seam,
    to_departure,
    to_detail,
    to_field,
    to_results,
    to_travellers,
    to_trip,
)
from tests.support.happy_path import TRAVELLER_MOVES

USER = TRAVELLER_ID  # the traveller of the flowkit paths


async def test_a_city_with_several_airports_offers_them_all(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    await chat.say("/start")
    reply = await chat.say("london")
    assert "Which one" in reply.text
    assert reply.labels[0].startswith("London (all airports)")
    assert any("(LHR)" in label for label in reply.labels)
    await chat.press("London (all airports)")
    assert (await chat.record()).data["search"]["origin"]["code"] == "LON"


@pytest.mark.parametrize(
    ("typed", "code"), [("lisbn", "LIS"), ("JFK", "JFK"), ("Sao Paulo", "SAO")]
)
async def test_typos_codes_and_accents_resolve(seam: SeamKit, typed: str, code: str) -> None:
    chat = seam.chat(USER)
    await chat.say("/start")
    reply = await chat.say(typed)
    if reply.state == "search:origin":  # offered as a choice: take the first
        reply = await chat.press(reply.labels[0])
    assert reply.state == "search:destination"
    origin = (await chat.record()).data["search"]["origin"]
    assert code in (origin["code"], *origin["airports"])


async def test_a_return_before_departure_is_refused_then_a_later_one_searches(
    seam: SeamKit,
) -> None:
    chat = await to_departure(seam)
    await chat.press("Add a return date")
    out = seam.day(60)
    await chat.say(out.isoformat())
    reply = await chat.say((out - timedelta(days=3)).isoformat())
    assert "The return can't be before the departure" in reply.text
    assert reply.state == "search:return"
    reply = await chat.say((out + timedelta(days=7)).isoformat())
    assert reply.state == "search:results"
    assert (await chat.record()).data["results"]["query"]["return_date"] == (
        out + timedelta(days=7)
    ).isoformat()


async def test_the_calendar_pages_in_place_and_picks_a_day(seam: SeamKit) -> None:
    chat = await to_departure(seam)
    shown = len(chat.messages)
    reply = await chat.press("›")
    assert len(chat.messages) == shown  # paging edits the calendar in place
    day = next(
        b.label
        for b in reply.last.buttons
        if b.label.lstrip("•").split("·")[0].isdigit() and "|day|" in (b.callback_data or "")
    )
    reply = await chat.press(day)
    assert reply.state == "search:results"


async def test_travellers_stepper_keeps_the_airline_rules(seam: SeamKit) -> None:
    chat = await to_travellers(seam)
    reply = await chat.press("+")  # adults: 2
    assert "Adults (12+): 2" in reply.labels

    async def add_infant() -> str:
        data = next(d for b in chat.last.buttons if (d := b.callback_data) and d.endswith("|i+"))
        return (await chat.press_data(data)).toast

    assert await add_infant() == ""
    assert await add_infant() == ""
    assert "infants" in await add_infant()
    assert (await chat.record()).data["search"]["infants"] == 2
    reply = await chat.press("Search flights")
    assert "2 adults, 2 infants" in reply.text


async def test_the_cabin_button_cycles_and_the_search_uses_it(seam: SeamKit) -> None:
    chat = await to_travellers(seam)
    reply = await chat.press("Cabin:")
    assert "Cabin: Premium economy ⟳" in reply.labels
    await chat.press("Search flights")
    assert (await chat.record()).data["results"]["query"]["cabin"] == "W"


async def test_detail_shows_every_segment_and_the_total(seam: SeamKit) -> None:
    chat = await to_field(seam)
    detail = chat.last.text
    assert "Total €" in detail
    assert re.search(r"\d\d:\d\d [A-Z]{3}", detail)
    assert "Demo fare" in detail


async def test_a_changed_price_is_shown_with_the_choice_to_continue(seam: SeamKit) -> None:
    offer = await cheapest_offer(
        seam.services.places, seam.clock, seam.day(DAYS_AHEAD), REPRICED_ROUTE
    )
    higher = offer.price.amount + REPRICE
    chat = await to_results(seam, REPRICED_ROUTE[1])
    reply = await chat.press("1")
    assert "The price has changed" in reply.text
    assert f"€{higher / 100:,.2f}" in reply.text
    assert reply.state == "book:price"
    reply = await chat.press("Continue at")
    assert reply.state == "book:field"
    price = (await chat.record()).data["booking"]["itinerary"]["price"]
    assert price["amount"] == higher


async def test_back_from_a_changed_price_returns_to_the_results(seam: SeamKit) -> None:
    chat = await to_results(seam, REPRICED_ROUTE[1])
    await chat.press("1")
    reply = await chat.press("Back to results")
    assert reply.state == "search:results"
    assert (await chat.record()).data["booking"] is None


async def test_a_sold_out_offer_goes_back_to_the_results(seam: SeamKit) -> None:
    chat = await to_results(seam, SOLD_OUT_ROUTE[1])
    reply = await chat.press("1")
    assert "that fare has just sold out" in reply.text
    assert reply.state == "search:results"


async def test_a_result_list_that_changed_is_shown_again(seam: SeamKit) -> None:
    chat = await to_results(seam)
    data = next(b.callback_data or "" for b in chat.last.buttons if b.label == "1")
    forged = data.rsplit(".", 1)[0] + ".000000"  # the same number on another list
    reply = await chat.press_data(forged)
    assert reply.toast == "The results were refreshed: pick again from the new list."
    assert reply.state == "search:results"


async def test_a_chat_stored_in_the_old_trip_question_still_goes_on(seam: SeamKit) -> None:
    """``search:trip`` is no longer asked, but a record stored by an earlier version loads."""
    chat = await to_trip(seam)
    reply = await chat.press_data(await chat.current("trip", "2"))
    assert "Return trip" in reply.text
    assert reply.state == "search:departure"


async def test_a_chat_stored_in_the_old_detail_view_still_books(seam: SeamKit) -> None:
    chat = await to_detail(seam)
    arg = pick_arg(chat)
    reply = await chat.press_data(await chat.current("book", arg))
    assert "Price checked" in reply.text
    assert reply.state == "book:field"


# --- "today" and flights that have left ------------------------------------------------------


async def _to_date_step(chat: Chat, origin: str, destination: str) -> None:
    await chat.say("/start")
    await chat.say(origin)
    await chat.say(destination)


async def test_today_is_the_departure_airports_date_not_anywhere_on_earths(
    tmp_path: Path, places: PlaceIndex
) -> None:
    # 07:54 UTC on a Wednesday: Wednesday afternoon in Tokyo, Tuesday evening on UTC-12.
    wednesday = coming_weekday_at(2, 7, 54)
    async with open_seam(tmp_path, places=places, clock=Clock(wednesday)) as kit:
        chat = kit.chat(USER)
        await _to_date_step(chat, "NRT", "LIS")
        # the calendar marks Wednesday as today
        assert any(label.startswith(f"•{wednesday.day}·") for label in chat.last_labels())
        await chat.say("today")
        search = (await chat.record()).data["search"]
        assert search["departure"] == wednesday.date().isoformat()
        await _to_date_step(chat, "NRT", "LIS")
        await chat.say("tomorrow")
        thursday = wednesday.date() + timedelta(days=1)
        assert (await chat.record()).data["search"]["departure"] == thursday.isoformat()


async def test_only_a_day_past_at_the_departure_airport_is_refused(
    tmp_path: Path, places: PlaceIndex
) -> None:
    wednesday = coming_weekday_at(2, 7, 54)
    tuesday = (wednesday - timedelta(days=1)).date().isoformat()
    async with open_seam(tmp_path, places=places, clock=Clock(wednesday)) as kit:
        chat = kit.chat(USER)
        await _to_date_step(chat, "LIS", "FCO")
        reply = await chat.say(tuesday)
        assert "That date has passed" in reply.text  # Tuesday is over in Lisbon
        await _to_date_step(chat, "HNL", "LAX")
        await chat.say(tuesday)  # 21:54 on Tuesday in Honolulu: still today there
        assert (await chat.record()).data["search"]["departure"] == tuesday


async def test_flights_that_have_left_or_leave_within_two_hours_are_not_listed(
    tmp_path: Path, places: PlaceIndex
) -> None:
    # 15:00 in Lisbon (UTC+0 in winter, +1 in summer): nothing before 17:00 local may show.
    afternoon = coming_weekday_at(2, 14, 0)
    async with open_seam(tmp_path, places=places, clock=Clock(afternoon)) as kit:
        chat = kit.chat(USER)
        await _to_date_step(chat, "LIS", "MAD")
        await chat.say("today")
        reply = await chat.press("Earliest")
        shown = re.findall(r"(\d\d:\d\d) LIS", reply.text)
        local_limit = (afternoon + timedelta(hours=2)).astimezone(ZoneInfo("Europe/Lisbon"))
        assert shown
        assert all(time_ >= f"{local_limit:%H:%M}" for time_ in shown), shown


async def test_pay_for_a_flight_that_has_left_meanwhile_says_so_plainly(
    tmp_path: Path, places: PlaceIndex
) -> None:
    clock = Clock(coming_weekday_at(2, 6, 0))
    async with scripted_seam(tmp_path, places, clock=clock) as kit:
        chat = kit.chat(USER)
        await _to_date_step(chat, "LIS", "MAD")
        await chat.say("today")
        await chat.press("Earliest")
        await chat.press("1")
        reply = await chat.play(TRAVELLER_MOVES)
        assert reply.state == "book:review"
        clock.advance(timedelta(hours=20))  # the flight left while the review was open
        reply = await chat.press("Pay")
        assert "went wrong" not in reply.text
        assert "too soon to book" in reply.text
        assert reply.state == "search:results"
        assert await kit.storage.list_bookings(USER) == []  # nothing was held or charged


# --- fewer turns ------------------------------------------------------------------------------


async def test_a_whole_search_in_one_message_goes_straight_to_the_results(
    seam: SeamKit,
) -> None:
    out = seam.day(70)
    while out.day <= 12:  # written day first, a day over 12 cannot be a month
        out += timedelta(days=1)
    back = out + timedelta(days=1)
    while back.day != 3:  # '3/02': day and month could swap, but the departure said day first
        back += timedelta(days=1)
    chat = seam.chat(USER)
    await chat.say("/start")
    reply = await chat.say(f"LIS-NRT {out:%d/%m} return {back.day}/{back:%m} 2 adults")
    assert reply.state == "search:results", reply.text
    query = (await chat.record()).data["results"]["query"]
    assert query["origin"]["code"] == "LIS"
    assert query["destination"]["code"] == "NRT"
    assert query["departure"] == out.isoformat()
    assert query["return_date"] == back.isoformat()
    assert query["passengers"] == {"adults": 2, "children": 0, "infants": 0}
    assert "2 adults" in reply.text


async def test_a_city_with_a_date_asks_nothing_else_and_defaults_to_one_adult(
    seam: SeamKit,
) -> None:
    chat = seam.chat(USER)
    await chat.say("/start")
    reply = await chat.say("Lisbon to Tokyo on 20 March")
    assert reply.state == "search:results", reply.text
    query = (await chat.record()).data["results"]["query"]
    assert query["destination"]["code"] == "TYO"  # all airports
    assert query["return_date"] is None
    assert "1 adult" in reply.text
    reply = await chat.press("1 adult · change")  # the stepper is there when wanted
    assert reply.state == "search:travellers"
    reply = await chat.press("‹ Back to results")
    assert reply.state == "search:results"
    await chat.press("1 adult · change")
    await chat.press("+")
    again = await chat.press("Search flights")
    assert "2 adults" in again.text


async def test_a_whole_search_without_a_date_asks_only_the_date(seam: SeamKit) -> None:
    chat = seam.chat(USER)
    await chat.say("/start")
    reply = await chat.say("from Berlin to Lisbon")
    assert reply.state == "search:departure"
    assert "When do you fly?" in reply.text
    assert any("Add a return date" in label for label in reply.labels)


async def test_a_return_date_is_added_from_the_date_step(seam: SeamKit) -> None:
    chat = await to_departure(seam)
    out = seam.day(40)
    await chat.say(f"{out.isoformat()} return {(out + timedelta(days=5)).isoformat()}")
    query = (await chat.record()).data["results"]["query"]
    assert query["return_date"] == (out + timedelta(days=5)).isoformat()


async def test_one_way_instead_searches_from_the_return_step(seam: SeamKit) -> None:
    chat = await to_departure(seam)
    await chat.press("Add a return date")
    await chat.say(seam.day(40).isoformat())
    reply = await chat.press("One-way instead")
    assert reply.state == "search:results"
    assert (await chat.record()).data["results"]["query"]["return_date"] is None


async def test_back_buttons_walk_the_search_steps_backwards(seam: SeamKit) -> None:
    chat = await to_departure(seam)
    reply = await chat.press("‹ Back")
    assert reply.state == "search:destination"
    assert (await chat.record()).data["search"]["destination"] is None
    reply = await chat.press("‹ Back")
    assert reply.state == "search:origin"


async def test_results_offer_a_new_search_and_another_date(seam: SeamKit) -> None:
    chat = await to_results(seam)
    reply = await chat.press("Change date")
    assert reply.state == "search:departure"
    assert (await chat.record()).data["results"] is None
    await chat.say(seam.day(30).isoformat())
    reply = await chat.press("New search")
    assert reply.state == "search:origin"
    assert "Where are you flying from?" in reply.text


async def test_a_date_whose_day_and_month_could_swap_is_asked_not_guessed(
    seam: SeamKit,
) -> None:
    chat = await to_departure(seam)
    year = seam.today().year + 1
    reply = await chat.say(f"03/04/{year}")
    assert "Which day do you mean" in reply.text
    assert reply.state == "search:departure"
    assert any("3 Apr" in label for label in reply.labels)
    assert any("4 Mar" in label for label in reply.labels)
    await chat.press("4 Mar")
    assert (await chat.record()).data["results"]["query"]["departure"] == f"{year}-03-04"


async def test_a_city_typed_after_cancel_starts_the_search(seam: SeamKit) -> None:
    chat = await to_departure(seam)
    await chat.say("/cancel")
    reply = await chat.say("Berlin")
    assert "Type /start" not in reply.text
    assert reply.state == "search:destination"
    assert (await chat.record()).data["search"]["origin"]["code"] == "BER"
    nonsense = await seam.chat(USER + 1).say("qwxzvbn")
    assert "Type /start to search for flights" in nonsense.text


async def test_the_calendar_shows_the_cheapest_fare_of_each_day(seam: SeamKit) -> None:
    chat = await to_departure(seam)
    question = (await chat.press("›")).last  # next month: whole days, none partly flown
    assert "cheapest one-way fare that day in EUR" in question.text
    priced = {
        b.label.lstrip("•").split("·")[0]: int(b.label.split("·")[1])
        for b in question.buttons
        if "·" in b.label and "|day|" in (b.callback_data or "")
    }
    assert len(priced) >= 2
    day, fare = min(priced.items(), key=lambda item: item[1])
    label = next(b.label for b in question.buttons if b.label.lstrip("•").startswith(f"{day}·"))
    results = (await chat.press(label)).text
    cheapest = min(int(p.replace(",", "")) for p in re.findall(r"€([\d,]+)", results))
    assert cheapest == fare  # the calendar's price is the cheapest result of that day


async def test_results_sort_filter_and_page(seam: SeamKit) -> None:
    chat = await to_results(seam)
    prices = [int(p.replace(",", "")) for p in re.findall(r"€([\d,]+)", chat.last.text)]
    assert prices == sorted(prices)
    assert "demo fares" in chat.last.text
    reply = await chat.press("Fastest")
    assert "✓ Fastest" in reply.labels
    reply = await chat.press("Direct only")
    assert "Direct only ✓" in reply.labels
    reply = await chat.press("Direct only ✓")
    if "Next ›" in reply.labels:
        reply = await chat.press("Next ›")
        assert "Page 2 of" in reply.text
        assert "‹ Prev" in reply.labels


@pytest.mark.parametrize(
    ("action", "arg", "toast"),
    [
        ("pick", "².000000", "The results were refreshed: pick again from the new list."),
        ("page", "²", "That page is not available."),
    ],
)
async def test_a_superscript_digit_in_a_forged_button_is_refused_not_a_crash(
    seam: SeamKit, action: str, arg: str, toast: str
) -> None:
    """``"²".isdigit()`` is true but ``int("²")`` raises: buttons take decimal digits only."""
    chat = await to_results(seam)
    reply = await chat.press_data(await chat.current(action, arg))
    assert reply.toast == toast
    assert reply.state == "search:results"
