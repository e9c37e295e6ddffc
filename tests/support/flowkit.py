"""Flow tests at the engine seam: the production composition root without Telegram.

``open_seam`` builds what ``bot.bootstrap.open_runtime`` builds (``open_services``: the same
services, flow deps, router and engine) on the local adapters: SQLite in memory, the memory state
store, demo fares on a fixed clock, the sandbox payment gateway, emails as files in a temporary
folder, and a ``MemoryNotifier`` where Telegram would be. A ``Chat`` sends ``Event`` values into
``Engine.handle`` as one user and keeps the chat as the user would see it: each reply's text and
buttons, edits replacing the message pressed, notifications (sent through the notifier) in line.
Every reply is checked as Telegram would check it (HTML parse mode, length) with the sandbox Bot
API's own rules, so a reply the real Bot API would refuse fails the test here too.

A turn takes milliseconds; the wiring (PTB, webhooks, the Bot API) keeps end-to-end tests of its
own (tests/test_conversation_e2e.py and the other *_e2e files).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.bootstrap import Services, open_services
from bot.config import load_settings
from bot.sandbox.formatting import message_text
from conversations.data import Conversation
from conversations.deps import FlowDeps
from conversations.engine import (
    Engine,
    Event,
    Outgoing,
    RenderedButton,
    TurnResult,
    User,
    encode_callback,
    render,
)
from conversations.state import ChatKey, StateRecord
from services.bookings import BookingService
from services.flights.base import FlightProvider
from services.flights.demo import DemoProvider
from services.flights.places import PlaceIndex
from services.flights.results import SortKey, sort_itineraries
from services.jobs.embedded import EmbeddedJobs
from services.messages import Notice
from services.models import Booking, Itinerary, Passengers, SearchQuery, today_anywhere
from services.money import Money
from services.notify import MemoryNotifier
from services.payments.sandbox import SandboxGateway
from services.storage import Storage
from tests.support.days import Clock, coming_weekday_at
from tests.support.happy_path import Move, booking_script, moves_to

BOT_ID = 777000
BOT_USERNAME = "seam_bot"


def fixed_clock() -> Clock:
    """A Wednesday 09:00 UTC a week or more ahead: a fixed shape of day that stays in the future,
    so the few checks that read the real clock (a card's expiry...) agree with it."""
    return Clock(coming_weekday_at(2, 9, 0))


@dataclass
class Shown:
    """One message in the chat as the user sees it now (an edit replaces the text and buttons)."""

    html: str
    text: str  # as Telegram shows it: tags parsed away, entities decoded
    keyboard: tuple[tuple[RenderedButton, ...], ...]
    document: str | None = None  # the file name of a document sent with it

    @property
    def buttons(self) -> list[RenderedButton]:
        return [button for row in self.keyboard for button in row]

    @property
    def labels(self) -> list[str]:
        return [button.label for button in self.buttons]


@dataclass
class Reply:
    """What the bot did in answer to one event: the messages sent or edited, the toast on a
    button press, and the conversation state the turn left the chat in."""

    messages: list[Shown]
    notice: Notice | None
    state: str | None

    @property
    def text(self) -> str:
        return "\n".join(message.text for message in self.messages)

    @property
    def html(self) -> str:
        return "\n".join(message.html for message in self.messages)

    @property
    def last(self) -> Shown:
        assert self.messages, "the bot sent nothing"
        return self.messages[-1]

    @property
    def labels(self) -> list[str]:
        return [label for message in self.messages for label in message.labels]

    @property
    def toast(self) -> str:
        return self.notice.text if self.notice is not None else ""


def _shown(reply: Outgoing) -> Shown:
    plain, _ = message_text(reply.text, "HTML", None)  # refused exactly as Telegram refuses
    return Shown(
        html=reply.text,
        text=plain,
        keyboard=reply.keyboard,
        document=reply.document.filename if reply.document else None,
    )


class Chat:
    """One user's private chat with the bot, driven through ``Engine.handle``."""

    def __init__(self, kit: SeamKit, user: User) -> None:
        self.kit = kit
        self.user = user
        self.messages: list[Shown] = []
        self._notified = 0  # how many of the notifier's messages to this user are in the chat

    @property
    def id(self) -> int:
        return self.user.id

    async def say(self, text: str) -> Reply:
        """Type ``text``: a command when it starts with '/'."""
        return await self._turn(Event.typed(self.user, self.id, text, bot_username=BOT_USERNAME))

    async def press(self, label: str) -> Reply:
        """Press the button labelled ``label`` (exactly, else containing it) on the newest
        message that shows one."""
        self._take_notifications()
        for exact in (True, False):
            for index in range(len(self.messages) - 1, -1, -1):
                for button in self.messages[index].buttons:
                    if button.callback_data is None:
                        continue
                    if button.label == label if exact else label in button.label:
                        return await self.press_data(button.callback_data, on=index)
        raise AssertionError(f"no button {label!r} in the chat; newest: {self.last_labels()}")

    async def press_data(self, data: str, *, on: int | None = None) -> Reply:
        """Press a button carrying ``data`` (forged, or kept from an older message) on message
        ``on`` (default: the newest)."""
        self._take_notifications()
        event = Event(kind="button", user=self.user, chat_id=self.id, callback_data=data)
        target = on if on is not None else len(self.messages) - 1
        return await self._turn(event, pressed=target)

    async def play(self, moves: Iterable[Move]) -> Reply:
        """Play a script (tests/support/happy_path.py); each move must get its answer and
        reach its state. The last move's reply."""
        reply = Reply(messages=[], notice=None, state=None)
        for move in moves:
            if move.press is not None:
                reply = await self.press(move.press)
            else:
                assert move.text is not None
                reply = await self.say(move.text)
            assert move.expect in reply.text, f"{move.said}: {reply.text[:400]!r}"
            if move.state is not None:
                assert reply.state == move.state, f"{move.said}: in {reply.state}"
        return reply

    async def _turn(self, event: Event, *, pressed: int | None = None) -> Reply:
        self._take_notifications()
        result: TurnResult = await self.kit.engine.handle(event)
        shown = [_shown(reply) for reply in result.replies]
        for message, reply in zip(shown, result.replies, strict=True):
            if reply.edit and pressed is not None and 0 <= pressed < len(self.messages):
                self.messages[pressed] = message
            else:
                self.messages.append(message)
        # What the services sent during the turn (a confirmation...) follows its replies.
        notified = self._take_notifications()
        return Reply(messages=shown + notified, notice=result.notice, state=result.state)

    def _take_notifications(self) -> list[Shown]:
        """Bring what the notifier sent this user since last time into the chat."""
        sent = self.kit.notifier.to(self.id)
        fresh = [_shown(out) for message in sent[self._notified :] for out in render([message], 0)]
        self._notified = len(sent)
        self.messages.extend(fresh)
        return fresh

    def notifications(self) -> list[str]:
        """The texts of what the services sent this user outside a turn, oldest first."""
        return [message_text(m.text, "HTML", None)[0] for m in self.kit.notifier.to(self.id)]

    async def record(self) -> StateRecord:
        return await self.kit.services.adapters.state.peek(ChatKey(bot_id=BOT_ID, chat_id=self.id))

    async def state(self) -> str | None:
        return (await self.record()).state

    async def booking(self) -> Booking:
        """The booking this conversation made (it is in ``book:payment``)."""
        reference = (await self.record()).data["booking"]["reference"]
        booking = await self.kit.storage.get_booking_by_reference(reference, user_id=self.id)
        assert booking is not None, reference
        return booking

    @property
    def last(self) -> Shown:
        self._take_notifications()
        assert self.messages, "the chat is empty"
        return self.messages[-1]

    def last_labels(self) -> list[str]:
        """The labels of the newest message that has buttons."""
        for message in reversed(self.messages):
            if message.keyboard:
                return message.labels
        return []

    async def current(self, action: str, arg: str = "") -> str:
        """A button of the conversation's current step as the bot renders it: for a state an
        earlier version stored, whose message this chat never saw."""
        return encode_callback((await self.record()).version, action, arg)

    def stale(self, record: StateRecord, action: str, arg: str = "") -> str:
        """A button's data as an older step of this conversation had it: expired now."""
        return encode_callback(max(record.version - 1, 1), action, arg)


@dataclass
class SeamKit:
    """A bot's services and engine on local adapters, and the chats talking to it."""

    services: Services
    notifier: MemoryNotifier
    clock: Clock
    tmp_path: Path
    _chats: dict[int, Chat] = field(default_factory=dict)

    @property
    def engine(self) -> Engine[FlowDeps, Conversation]:
        return self.services.engine

    @property
    def storage(self) -> Storage:
        return self.services.adapters.storage

    @property
    def bookings(self) -> BookingService:
        return self.services.bookings

    @property
    def jobs(self) -> EmbeddedJobs:
        """The seam's job queue: scheduled jobs run when a test says (``run_scheduled``),
        enqueued ones at once (``drain`` waits for them)."""
        assert isinstance(self.services.jobs, EmbeddedJobs)
        return self.services.jobs

    def chat(
        self,
        user_id: int,
        first_name: str = "Sam",
        *,
        username: str | None = None,
        language: str | None = "en",
    ) -> Chat:
        if user_id not in self._chats:
            user = User(id=user_id, first_name=first_name, username=username, language=language)
            self._chats[user_id] = Chat(self, user)
        return self._chats[user_id]

    def today(self) -> date:
        """The bot's own today (the earliest date anywhere), on the kit's clock."""
        return today_anywhere(self.clock())

    def day(self, days_ahead: int = 90) -> date:
        return self.today() + timedelta(days=days_ahead)

    def happy_path(self, days_ahead: int = 90) -> tuple[Move, ...]:
        return booking_script(self.day(days_ahead))

    async def pay(self, booking: Booking) -> Booking:
        """The traveller pays on the sandbox checkout page: the event the page builds goes to
        the booking service as the page's Pay hands it (bot/web_payments.py), not over HTTP.
        The booking as it is afterwards."""
        gateway = self.services.adapters.gateway
        assert isinstance(gateway, SandboxGateway)
        assert booking.checkout_session_id is not None, booking.reference
        await self.bookings.handle_event(await gateway.pay(booking.checkout_session_id))
        paid = await self.storage.get_booking(booking.id)
        assert paid is not None
        return paid

    async def booked(self, chat: Chat, days_ahead: int = 90) -> Booking:
        """``chat`` books the happy path and pays: the booking, confirmed."""
        await chat.play(self.happy_path(days_ahead))
        return await self.pay(await chat.booking())


def demo_provider(places: PlaceIndex, clock: Clock, **options: Any) -> DemoProvider:
    """Demo fares on the kit's clock (``price_changes``, ``sold_out``, ``latency``...)."""
    return DemoProvider(
        places=places, today=lambda: today_anywhere(clock()), clock=clock, **options
    )


async def cheapest_offer(
    places: PlaceIndex,
    clock: Clock,
    departure: date,
    route: tuple[str, str] = ("LIS", "FCO"),
    passengers: Passengers | None = None,
) -> Itinerary:
    """The offer a traveller sees first (the cheapest) for ``route`` on ``departure``."""
    query = SearchQuery(
        origin=places.airport_location(route[0]),
        destination=places.airport_location(route[1]),
        departure=departure,
        passengers=passengers or Passengers(),
        currency="EUR",
    )
    offers = await demo_provider(places, clock).search(query)
    return sort_itineraries(offers, SortKey.PRICE)[0]


@contextlib.asynccontextmanager
async def open_seam(
    tmp_path: Path,
    *,
    places: PlaceIndex,
    clock: Clock | None = None,
    admin_ids: Sequence[int] = (),
    rate_limited: bool = True,
    redis_url: str | None = None,
    redis_prefix: str = "tb",
    provider: FlightProvider | None = None,
    **provider_options: Any,
) -> AsyncIterator[SeamKit]:
    """The seam on local adapters (state and cache on Redis instead with ``redis_url``, keys
    under ``redis_prefix``); ``provider_options`` go to the demo provider, unless ``provider``
    replaces it (scripted fares, tests/support/fares.py)."""
    clock = clock or fixed_clock()
    settings = load_settings(
        sqlite_path=":memory:",
        email_outbox_dir=tmp_path / "outbox",
        admin_user_ids=",".join(str(i) for i in admin_ids),
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        job_queue_backend="embedded",  # jobs run here, on demand (SeamKit.jobs)
        supabase_url=None,
        stripe_secret_key=None,
        stripe_webhook_secret=None,
        telegram_bot_token=None,
        smtp_url=None,
        flight_provider="demo",
    )
    notifier = MemoryNotifier()
    async with AsyncExitStack() as stack:
        services = await open_services(
            settings,
            stack,
            notifier=notifier,
            bot_id=BOT_ID,
            bot_username=BOT_USERNAME,
            clock=clock,
            provider=provider or demo_provider(places, clock, **provider_options),
            places=places,
            sole_worker=True,
        )
        # The background work open_runtime starts and stops around the services; the seam
        # starts no timers: a test runs a scheduled job when it wants (SeamKit.jobs).
        stack.push_async_callback(services.broadcasts.stop)
        stack.push_async_callback(services.receipts.close)
        if not rate_limited:
            services.engine.rate = None
        yield SeamKit(services=services, notifier=notifier, clock=clock, tmp_path=tmp_path)


# --- fixtures (registered in tests/conftest.py) -----------------------------------------------


@pytest.fixture(scope="session")
def places() -> PlaceIndex:
    """The airport index, built once: it takes about a second, a seam turn milliseconds."""
    return PlaceIndex.default()


@pytest.fixture
async def seam(tmp_path: Path, places: PlaceIndex) -> AsyncIterator[SeamKit]:
    """A fresh bot at the seam: empty storage and state, the fixed clock, demo fares (with the
    scripted recheck answers of REPRICED_ROUTE and SOLD_OUT_ROUTE), ADMIN_ID an admin."""
    async with scripted_seam(tmp_path, places) as kit:
        yield kit


@contextlib.asynccontextmanager
async def scripted_seam(
    tmp_path: Path, places: PlaceIndex, *, clock: Clock | None = None, **options: Any
) -> AsyncIterator[SeamKit]:
    """``open_seam`` with the default kit's admin and scripted fares."""
    clock = clock or fixed_clock()
    day = today_anywhere(clock()) + timedelta(days=DAYS_AHEAD)
    repriced = await cheapest_offer(places, clock, day, REPRICED_ROUTE)
    gone = await cheapest_offer(places, clock, day, SOLD_OUT_ROUTE)
    higher = Money(amount=repriced.price.amount + REPRICE, currency=repriced.price.currency)
    options.setdefault("price_changes", {repriced.id: higher})
    options.setdefault("sold_out", [gone.id])
    async with open_seam(
        tmp_path, places=places, clock=clock, admin_ids=(ADMIN_ID,), **options
    ) as kit:
        yield kit


# --- the way to every state -------------------------------------------------------------------

TRAVELLER_ID = 5001
ADMIN_ID = 9001
# The default kit's scripted fares (90 days out): the cheapest Lisbon–Porto fare costs
# REPRICE more when the booking rechecks it, the cheapest Lisbon–Madrid one has sold out.
REPRICED_ROUTE = ("LIS", "OPO")
SOLD_OUT_ROUTE = ("LIS", "MAD")
REPRICE = 25_00
DAYS_AHEAD = 90

Path_ = Callable[[SeamKit], Awaitable[Chat]]


async def to_origin(kit: SeamKit) -> Chat:
    chat = kit.chat(TRAVELLER_ID)
    await chat.play(moves_to("search:origin", kit.day(DAYS_AHEAD)))
    return chat


async def to_destination(kit: SeamKit) -> Chat:
    chat = await to_origin(kit)
    await chat.say("Lisbon")
    return chat


async def to_departure(kit: SeamKit, destination: str = "FCO") -> Chat:
    chat = await to_destination(kit)
    await chat.say(destination)
    return chat


async def to_return(kit: SeamKit) -> Chat:
    chat = await to_departure(kit)
    await chat.press("Add a return date")
    await chat.say(kit.day(DAYS_AHEAD).isoformat())
    return chat


async def to_results(kit: SeamKit, destination: str = "FCO") -> Chat:
    chat = await to_departure(kit, destination)
    await chat.say(kit.day(DAYS_AHEAD).isoformat())
    return chat


async def to_travellers(kit: SeamKit) -> Chat:
    chat = await to_results(kit)
    await chat.press("change")
    return chat


async def _stored_as(chat: Chat, state: str) -> None:
    """Put the chat's conversation in ``state`` as an earlier version of the bot stored it
    (states no longer entered, kept so that such chats go on)."""
    chats = chat.kit.services.deps.chats
    assert chats is not None
    assert await chats.put(chat.id, state, (await chat.record()).data)


async def to_trip(kit: SeamKit) -> Chat:
    """``search:trip``: the one-way/return question of earlier versions."""
    chat = await to_departure(kit)
    await _stored_as(chat, "search:trip")
    return chat


async def to_detail(kit: SeamKit) -> Chat:
    """``search:detail``: a result's detail with its Book button, as earlier versions showed."""
    chat = await to_results(kit)
    await _stored_as(chat, "search:detail")
    return chat


def pick_arg(chat: Chat, number: str = "1") -> str:
    """The argument of a result's number button on the newest results message."""
    for message in reversed(chat.messages):
        for button in message.buttons:
            if button.label == number and button.callback_data and "|pick|" in button.callback_data:
                return button.callback_data.split("|", 2)[2]
    raise AssertionError("no results shown")


async def to_price(kit: SeamKit) -> Chat:
    chat = await to_results(kit, REPRICED_ROUTE[1])
    await chat.press("1")
    return chat


async def to_field(kit: SeamKit) -> Chat:
    chat = kit.chat(TRAVELLER_ID)
    await chat.play(moves_to("book:field", kit.day(DAYS_AHEAD)))
    return chat


async def to_review(kit: SeamKit) -> Chat:
    chat = kit.chat(TRAVELLER_ID)
    await chat.play(moves_to("book:review", kit.day(DAYS_AHEAD)))
    return chat


async def to_edit(kit: SeamKit) -> Chat:
    chat = await to_review(kit)
    await chat.press("Edit")
    return chat


async def to_payment(kit: SeamKit) -> Chat:
    chat = kit.chat(TRAVELLER_ID)
    await chat.play(moves_to("book:payment", kit.day(DAYS_AHEAD)))
    return chat


async def to_admin_menu(kit: SeamKit) -> Chat:
    chat = kit.chat(ADMIN_ID, "Ada", username="ada_admin")
    await chat.say("/admin")
    return chat


async def to_admin_ask(kit: SeamKit) -> Chat:
    chat = await to_admin_menu(kit)
    await chat.press("Booking")
    return chat


async def to_refund_confirm(kit: SeamKit) -> Chat:
    booking = await kit.booked(kit.chat(TRAVELLER_ID))
    chat = kit.chat(ADMIN_ID, "Ada", username="ada_admin")
    await chat.say(f"/refund {booking.reference}")
    return chat


async def to_broadcast_text(kit: SeamKit) -> Chat:
    chat = kit.chat(ADMIN_ID, "Ada", username="ada_admin")
    await chat.say("/broadcast")
    return chat


async def to_broadcast_confirm(kit: SeamKit) -> Chat:
    await kit.chat(TRAVELLER_ID).say("/start")  # someone to send it to
    chat = kit.chat(ADMIN_ID, "Ada", username="ada_admin")
    await chat.say("/broadcast Flights to Rome are cheaper this week.")
    return chat


async def to_alert_target(kit: SeamKit) -> Chat:
    chat = await to_results(kit)
    await chat.press("Watch this route")
    return chat


# Every state a seam test can put a chat in, by its stored name. tests/test_seam_states.py
# fails when the router declares a state that is missing here.
PATHS: dict[str, Path_] = {
    "search:origin": to_origin,
    "search:destination": to_destination,
    "search:trip": to_trip,
    "search:departure": to_departure,
    "search:return": to_return,
    "search:travellers": to_travellers,
    "search:results": to_results,
    "search:detail": to_detail,
    "book:price": to_price,
    "book:field": to_field,
    "book:review": to_review,
    "book:edit": to_edit,
    "book:payment": to_payment,
    "admin:menu": to_admin_menu,
    "admin:ask": to_admin_ask,
    "admin:refund_confirm": to_refund_confirm,
    "admin:broadcast_text": to_broadcast_text,
    "admin:broadcast_confirm": to_broadcast_confirm,
    "alerts:target": to_alert_target,
}
