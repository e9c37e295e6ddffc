"""Putting flows together: clashes fail at start-up, and menus and /help come from the flows.

Toy flows run through the real engine on the memory state store, so what is checked is what a
chat would see; the bot's own flows are checked for the menus a traveller and an admin get.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from conversations.engine import (
    UNKNOWN_COMMAND,
    Engine,
    Event,
    Pressed,
    State,
    Step,
    User,
    encode_callback,
)
from conversations.flow import SHOW_HELP, Command, Extension, Flow, FlowDeclarationError, Registry
from conversations.router import build_registry
from conversations.state import ChatKey, StateRecord
from conversations.state_memory import MemoryStateStore
from services.messages import Button, Message


class Notes(BaseModel):
    said: list[str] = []


@dataclass
class Deps:
    admin_ids: frozenset[int] = frozenset()


ToyFlow = Flow[Deps, Notes]
KEY = ChatKey(bot_id=1, chat_id=5)


def load(state: str | None, data: dict[str, Any]) -> Notes:
    return Notes.model_validate(data)


async def idle_text(deps: Deps, notes: Notes, event: Event) -> Step:
    return Step(state=None, data=notes, replies=[Message(text="idle")])


async def open_box(deps: Deps, notes: Notes, event: Event) -> Step:
    return Step(
        state="box:open",
        data=notes,
        replies=[
            Message(text="The box is open.", buttons=((Button(label="Shut", action="shut"),),))
        ],
    )


async def shut(deps: Deps, notes: Notes, event: Event, pressed: Pressed) -> Step:
    return Step(state=None, data=None, replies=[Message(text="Shut.")])


async def peek(deps: Deps, notes: Notes, event: Event, pressed: Pressed) -> Step:
    return Step(state="box:open", data=notes, replies=[Message(text="A cat.")])


async def everywhere(deps: Deps, notes: Notes, event: Event, pressed: Pressed) -> Step:
    return Step(state=None, data=None, replies=[Message(text="global")])


async def admin_only(deps: Deps, notes: Notes, event: Event) -> Step:
    return Step(state=None, data=notes, replies=[Message(text="secret")])


HOME: ToyFlow = Flow(
    name="home",
    prefix="home:",
    idle=State("", hint="idle", on_text=idle_text),
    commands=(
        Command("open", open_box, menu="Open the box", help="open the box"),
        Command("help", SHOW_HELP, menu="What I can do", help="this message"),
        Command("audit", admin_only, menu="Audit the boxes", help="audit", admin=True),
    ),
    global_buttons={"!home": everywhere},
)
BOX: ToyFlow = Flow(
    name="box", prefix="box:", states=(State("box:open", hint="Shut it.", buttons={"shut": shut}),)
)


def registry(*flows: ToyFlow) -> Registry[Deps, Notes]:
    return Registry(flows, load_data=load, help_intro="I keep boxes.")


@pytest.fixture
async def store() -> AsyncIterator[MemoryStateStore]:
    store = MemoryStateStore()
    yield store
    await store.close()


def engine(store: MemoryStateStore, *flows: ToyFlow) -> Engine[Deps, Notes]:
    return Engine(store, registry(*flows).router(), Deps(), bot_id=1, ttl=60)


def command(name: str) -> Event:
    return Event(kind="command", user=User(id=5), chat_id=5, command=name)


def press(version: int, action: str) -> Event:
    return Event(
        kind="button", user=User(id=5), chat_id=5, callback_data=encode_callback(version, action)
    )


# clashes fail when the router is built --------------------------------------------------------


def test_a_state_declared_twice_fails() -> None:
    # Prefixes keep flows apart, so a state can only clash inside one flow, or by its prefix.
    twice: ToyFlow = Flow(
        name="lid", prefix="lid:", states=(State("lid:up", hint=""), State("lid:up", hint=""))
    )
    with pytest.raises(FlowDeclarationError, match=r"state declared twice: lid:up"):
        registry(HOME, twice)
    routed_and_stored: ToyFlow = Flow(
        name="lid",
        prefix="lid:",
        states=(State("lid:up", hint=""),),
        stored_states=frozenset({"lid:up"}),
    )
    with pytest.raises(FlowDeclarationError, match=r"state declared twice: lid:up"):
        registry(HOME, routed_and_stored)
    same_prefix: ToyFlow = Flow(name="crate", prefix="box:")
    with pytest.raises(FlowDeclarationError, match=r"state prefix declared twice: box:"):
        registry(HOME, BOX, same_prefix)


def test_a_state_outside_its_flows_prefix_fails() -> None:
    stray: ToyFlow = Flow(name="lid", prefix="lid:", states=(State("box:lid", hint=""),))
    with pytest.raises(FlowDeclarationError, match=r"flow 'lid': state 'box:lid' does not start"):
        registry(HOME, stray)
    hidden: ToyFlow = Flow(name="lid", prefix="lid:", stored_states=frozenset({"lidded"}))
    with pytest.raises(FlowDeclarationError, match=r"state 'lidded'"):
        registry(HOME, hidden)
    # One prefix inside another would let a flow's states pass as the other's.
    nested: ToyFlow = Flow(name="boxes", prefix="box:open:")
    with pytest.raises(FlowDeclarationError, match=r"starts with 'box:'"):
        registry(HOME, BOX, nested)


def test_a_command_declared_by_two_flows_fails() -> None:
    rival: ToyFlow = Flow(
        name="rival",
        prefix="rival:",
        commands=(Command("open", open_box, menu="Open it", help="open it"),),
    )
    with pytest.raises(FlowDeclarationError, match=r"command declared twice: /open"):
        registry(HOME, BOX, rival)


def test_a_global_button_declared_by_two_flows_fails() -> None:
    rival: ToyFlow = Flow(name="rival", prefix="rival:", global_buttons={"!home": everywhere})
    with pytest.raises(FlowDeclarationError, match=r"global button declared twice: !home"):
        registry(HOME, BOX, rival)


def test_a_button_added_twice_to_a_state_fails() -> None:
    own: ToyFlow = Flow(name="cat", prefix="cat:", extends=(Extension("box:open", {"shut": peek}),))
    with pytest.raises(FlowDeclarationError, match=r"adds button 'shut' to 'box:open'"):
        registry(HOME, BOX, own)
    first: ToyFlow = Flow(
        name="cat", prefix="cat:", extends=(Extension("box:open", {"peek": peek}),)
    )
    second: ToyFlow = Flow(
        name="dog", prefix="dog:", extends=(Extension("box:open", {"peek": peek}),)
    )
    with pytest.raises(FlowDeclarationError, match=r"\(from flow 'cat'\)"):
        registry(HOME, BOX, first, second)


def test_buttons_for_a_state_nobody_routes_fail() -> None:
    lost: ToyFlow = Flow(
        name="cat", prefix="cat:", extends=(Extension("box:closed", {"peek": peek}),)
    )
    with pytest.raises(FlowDeclarationError, match=r"'box:closed', which no flow routes"):
        registry(HOME, BOX, lost)


def test_exactly_one_flow_answers_a_chat_in_no_state() -> None:
    with pytest.raises(FlowDeclarationError, match=r"exactly one flow .* 0 do"):
        registry(BOX)
    other_home: ToyFlow = Flow(name="home2", prefix="home2:", idle=State("", hint="too"))
    with pytest.raises(FlowDeclarationError, match=r"2 do"):
        registry(HOME, other_home)


# what a chat sees ------------------------------------------------------------------------------


async def test_buttons_a_flow_adds_to_another_flows_state_answer_in_it(
    store: MemoryStateStore,
) -> None:
    cat: ToyFlow = Flow(name="cat", prefix="cat:", extends=(Extension("box:open", {"peek": peek}),))
    with_cat = engine(store, HOME, BOX, cat)
    opened = await with_cat.handle(command("open"))
    assert opened.state == "box:open"
    version = (await store.peek(KEY)).version
    peeked = await with_cat.handle(press(version, "peek"))
    assert [r.text for r in peeked.replies] == ["A cat."]
    # The state's own buttons still work beside the added one.
    version = (await store.peek(KEY)).version
    assert [r.text for r in (await with_cat.handle(press(version, "shut"))).replies] == ["Shut."]

    # Without the flow that adds it, the button is not there: an expired-button notice.
    without_cat = engine(store, HOME, BOX)
    await without_cat.handle(command("open"))
    version = (await store.peek(KEY)).version
    refused = await without_cat.handle(press(version, "peek"))
    assert refused.replies == []
    assert refused.notice is not None
    assert "expired" in refused.notice.text


async def test_help_lists_the_travellers_commands_from_their_declarations(
    store: MemoryStateStore,
) -> None:
    answer = await engine(store, HOME, BOX).handle(command("help"))
    assert [r.text for r in answer.replies] == [
        "I keep boxes.\n\n/open — open the box\n/help — this message"
    ]
    assert answer.state is None  # /help leaves the chat where it was
    unknown = await engine(store, HOME, BOX).handle(command("close"))
    assert [r.text for r in unknown.replies] == [UNKNOWN_COMMAND]


def test_menus_list_admin_commands_for_admins_only() -> None:
    toys = registry(HOME, BOX)
    assert toys.menu(admin=False) == (("open", "Open the box"), ("help", "What I can do"))
    assert toys.menu(admin=True) == (
        ("open", "Open the box"),
        ("help", "What I can do"),
        ("audit", "Audit the boxes"),
    )


def test_a_features_command_takes_its_place_in_menus_and_help() -> None:
    home: ToyFlow = Flow(
        name="home",
        prefix="home:",
        idle=State("", hint="idle", on_text=idle_text),
        commands=(
            Command("open", open_box, menu="Open the box", help="open the box", position=10),
            Command("help", SHOW_HELP, menu="What I can do", help="this message", position=90),
        ),
    )
    lid: ToyFlow = Flow(
        name="lid",
        prefix="lid:",
        commands=(
            Command(
                "lid",
                admin_only,
                menu="Lid up or down",
                help="lift or lower the lid",
                args="up|down",
                position=20,
            ),
        ),
    )
    toys = registry(home, BOX, lid)  # listed last, shown where its position puts it
    assert [name for name, _ in toys.menu(admin=False)] == ["open", "lid", "help"]
    assert toys.help_text() == (
        "I keep boxes.\n\n"
        "/open — open the box\n"
        "/lid up|down — lift or lower the lid\n"
        "/help — this message"
    )


def test_the_bots_menus_and_help_a_traveller_and_an_admin_see() -> None:
    bot = build_registry()
    traveller = [name for name, _ in bot.menu(admin=False)]
    assert traveller == [
        *("start", "mybookings", "alerts", "cancel", "mydata", "reminders", "deletedata", "help"),
    ]
    admin = [name for name, _ in bot.menu(admin=True)]
    assert admin[: len(traveller)] == traveller
    assert admin[len(traveller) :] == [
        *("admin", "stats", "booking", "user", "refund", "ticketed"),
        *("block", "unblock", "broadcast", "broadcast_cancel"),
    ]
    assert dict(bot.menu(admin=True))["refund"] == "Refund: /refund REF [amount] [reason]"
    assert bot.help_text() == (
        "I find and book flights.\n\n"
        "/start — search for flights\n"
        "/mybookings — your bookings, payments and cancellations\n"
        "/alerts — the prices you watch: pause or delete them\n"
        "/cancel — stop what we're doing (your bookings are kept)\n"
        "/mydata — what I store about you\n"
        "/reminders on|off — check-in and travel-day reminders for your trips\n"
        "/deletedata — erase your data\n"
        "/help — this message"
    )


async def plant(store: MemoryStateStore, state: str, data: dict[str, Any]) -> None:
    turn = await store.begin(KEY)
    await store.commit(turn, StateRecord(state=state, data=data, version=7), ttl=60)


@pytest.mark.parametrize(
    ("state", "data"),
    [
        ("box:gone", {"said": ["kept"]}),  # a state this version no longer has
        ("box:open", {"said": 5}),  # data stored in an older shape
    ],
)
async def test_a_record_the_flows_cannot_use_starts_the_chat_over(
    store: MemoryStateStore, state: str, data: dict[str, Any]
) -> None:
    await plant(store, state, data)
    answer = await engine(store, HOME, BOX).handle(
        Event(kind="text", user=User(id=5), chat_id=5, text="hello")
    )
    assert [r.text for r in answer.replies] == ["idle"]
    assert (await store.peek(KEY)).state is None
