"""The travel domain: places, searches, itineraries, travellers and bookings.

Plain pydantic models with no I/O, shared by every layer. Times are timezone-aware; money is
``Money``; a booking's allowed status moves are data in ``TRANSITIONS``, the one place they live.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    model_validator,
)

from services.money import Money

MAX_SEATS = 9
# Flights leaving sooner than this are neither offered nor watched: nobody pays, checks in and
# reaches the gate in less (and a provider will not ticket them).
MIN_TIME_BEFORE_DEPARTURE = timedelta(hours=2)

# "Anywhere on Earth": the last time zone to reach a date. A date is past only once it is past
# everywhere, so a traveller in Honolulu is never told that today has gone.
_AOE = timezone(timedelta(hours=-12))


def today_anywhere(now: datetime | None = None) -> date:
    """The earliest date that is still 'today' somewhere on Earth (at ``now``, default the
    current instant). Only a lower bound: a traveller's own 'today' is their zone's date."""
    return (now or datetime.now(UTC)).astimezone(_AOE).date()


def _iata(value: str) -> str:
    code = value.strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise ValueError(f"{value!r} is not a three-letter IATA code")
    return code


IataCode = Annotated[str, AfterValidator(_iata)]


class Airport(BaseModel):
    """A real airport with the time zone its local times are in."""

    model_config = ConfigDict(frozen=True)

    iata: IataCode
    name: str
    city: str
    country: str  # ISO 3166-1 alpha-2
    tz: str  # IANA zone, e.g. "Europe/Lisbon"
    lat: float
    lon: float


class LocationKind(enum.StrEnum):
    AIRPORT = "airport"
    CITY = "city"


class Location(BaseModel):
    """What a traveller means by a place: one airport, or every airport of a city."""

    model_config = ConfigDict(frozen=True)

    code: str  # airport IATA or city/metro code (e.g. "LON")
    name: str  # display name, e.g. "London" or "Lisbon Humberto Delgado"
    kind: LocationKind
    country: str
    airports: tuple[str, ...]  # IATA codes searched for this place

    @property
    def label(self) -> str:
        if self.kind is LocationKind.AIRPORT:
            return f"{self.name} ({self.code})"
        return f"{self.name} (all airports)" if len(self.airports) > 1 else self.name


class Cabin(enum.StrEnum):
    """Cabin classes with Kiwi's one-letter codes."""

    ECONOMY = "M"
    PREMIUM_ECONOMY = "W"
    BUSINESS = "C"
    FIRST = "F"

    @property
    def label(self) -> str:
        return {
            "M": "Economy",
            "W": "Premium economy",
            "C": "Business",
            "F": "First",
        }[self.value]


class Passengers(BaseModel):
    """Who is travelling, under the usual airline rules."""

    model_config = ConfigDict(frozen=True)

    adults: int = Field(default=1, ge=1, le=MAX_SEATS)
    children: int = Field(default=0, ge=0, le=MAX_SEATS)
    infants: int = Field(default=0, ge=0, le=MAX_SEATS)

    @model_validator(mode="after")
    def _airline_rules(self) -> Self:
        if self.infants > self.adults:
            raise ValueError(
                "each infant must travel on an adult's lap: no more infants than adults"
            )
        if self.total > MAX_SEATS:
            raise ValueError(f"at most {MAX_SEATS} travellers can be booked together")
        return self

    @property
    def total(self) -> int:
        return self.adults + self.children + self.infants

    @property
    def seats(self) -> int:
        """Seats the party needs: infants travel on a lap."""
        return self.adults + self.children

    @classmethod
    def counting(cls, travellers: Iterable[Traveller]) -> Passengers:
        """The party a booking's travellers make, by category (what a provider re-prices for).
        Raises ``ValueError`` (pydantic's) for a party airlines would not take, e.g. no adult."""
        count = dict.fromkeys(PassengerCategory, 0)
        for traveller in travellers:
            count[traveller.category] += 1
        return cls(
            adults=count[PassengerCategory.ADULT],
            children=count[PassengerCategory.CHILD],
            infants=count[PassengerCategory.INFANT],
        )

    @property
    def categories(self) -> tuple[PassengerCategory, ...]:
        """One category per traveller, adults first: the order their details are asked in."""
        return (
            (PassengerCategory.ADULT,) * self.adults
            + (PassengerCategory.CHILD,) * self.children
            + (PassengerCategory.INFANT,) * self.infants
        )

    def describe(self) -> str:
        parts = [f"{self.adults} adult" + ("s" if self.adults != 1 else "")]
        if self.children:
            parts.append(f"{self.children} child" + ("ren" if self.children != 1 else ""))
        if self.infants:
            parts.append(f"{self.infants} infant" + ("s" if self.infants != 1 else ""))
        return ", ".join(parts)


class SearchQuery(BaseModel):
    """A flight search: where, when, who, which cabin. Return is optional (one-way otherwise)."""

    model_config = ConfigDict(frozen=True)

    origin: Location
    destination: Location
    departure: date
    return_date: date | None = None
    passengers: Passengers = Passengers()
    cabin: Cabin = Cabin.ECONOMY
    currency: str = "EUR"

    @model_validator(mode="after")
    def _dates_make_sense(self) -> Self:
        if self.departure < today_anywhere():
            raise ValueError("the departure date has already passed")
        if self.return_date is not None and self.return_date < self.departure:
            raise ValueError("the return date is before the departure date")
        if set(self.origin.airports) & set(self.destination.airports) or (
            self.origin.code == self.destination.code
        ):
            raise ValueError("origin and destination are the same place")
        return self

    @property
    def is_return(self) -> bool:
        return self.return_date is not None

    def cache_key(self) -> str:
        """Normalized identity of the search: equal searches share one cache entry."""
        parts = [
            ",".join(sorted(self.origin.airports)),
            ",".join(sorted(self.destination.airports)),
            self.departure.isoformat(),
            self.return_date.isoformat() if self.return_date else "-",
            f"{self.passengers.adults}.{self.passengers.children}.{self.passengers.infants}",
            self.cabin.value,
            self.currency,
        ]
        return "|".join(parts)


class Segment(BaseModel):
    """One flight: a take-off and a landing."""

    model_config = ConfigDict(frozen=True)

    carrier: str  # marketing airline IATA code, e.g. "TP"
    flight_number: str  # e.g. "TP1234"
    origin: IataCode
    destination: IataCode
    departure: AwareDatetime  # in the origin airport's own zone
    arrival: AwareDatetime  # in the destination airport's own zone
    inbound: bool = False  # True for the return direction of a round trip

    @property
    def duration(self) -> timedelta:
        return self.arrival - self.departure


class Baggage(BaseModel):
    model_config = ConfigDict(frozen=True)

    hand_kg: int | None = None
    hold_kg: int | None = None
    first_hold_bag: Money | None = None
    # Bags included per traveller, where the provider counts pieces instead of weight (Duffel).
    hand_pieces: int | None = None
    hold_pieces: int | None = None


class FareConditions(BaseModel):
    """What the fare allows before departure, as the provider states it; None: not stated."""

    model_config = ConfigDict(frozen=True)

    refundable: bool | None = None
    refund_penalty: Money | None = None  # kept by the airline on a refund
    changeable: bool | None = None
    change_penalty: Money | None = None  # charged by the airline per change


class PassengerCategory(enum.StrEnum):
    ADULT = "adult"
    CHILD = "child"
    INFANT = "infant"


class PriceLine(BaseModel):
    """What each traveller of one category pays (taxes included), where the provider says."""

    model_config = ConfigDict(frozen=True)

    category: PassengerCategory
    count: int = Field(ge=1, le=MAX_SEATS)
    each: Money
    taxes_each: Money | None = None  # of ``each``, when the provider separates them

    @property
    def total(self) -> Money:
        return self.each * self.count


class FareRules(BaseModel):
    """The fare's change and refund conditions as the provider gives them; None: not stated.
    Fees are per traveller."""

    model_config = ConfigDict(frozen=True)

    refundable: bool | None = None
    refund_fee: Money | None = None
    changeable: bool | None = None
    change_fee: Money | None = None


class Itinerary(BaseModel):
    """A bookable offer: the segments of every direction and the total price for all travellers.

    ``price_lines``, ``taxes`` and ``rules`` are optional detail a provider may fill: the split
    of ``price`` per traveller category (summing to it), the taxes and fees included in it, and
    the change and refund conditions. Empty or None when the provider does not give them.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    provider: str  # "demo" | "kiwi" | "duffel"
    segments: tuple[Segment, ...] = Field(min_length=1)
    price: Money
    booking_token: str | None = None  # provider's handle for re-pricing and ticketing
    seats_left: int | None = None
    baggage: Baggage | None = None
    deep_link: str | None = None
    conditions: FareConditions | None = None
    # When the provider stops honouring this offer; a payment link never outlives it.
    fare_expires_at: AwareDatetime | None = None
    # Whether the airline can hold the seats unpaid (a hold order) while the traveller pays.
    holdable: bool | None = None
    price_lines: tuple[PriceLine, ...] = ()
    taxes: Money | None = None
    rules: FareRules | None = None

    @property
    def is_demo(self) -> bool:
        return self.provider == "demo"

    @property
    def outbound(self) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if not s.inbound)

    @property
    def inbound(self) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.inbound)

    @property
    def departure(self) -> datetime:
        return self.outbound[0].departure

    @property
    def return_departure(self) -> datetime | None:
        """When the flight home leaves (the first inbound segment); None for a one-way trip."""
        inbound = self.inbound
        return inbound[0].departure if inbound else None

    @property
    def arrival(self) -> datetime:
        return self.outbound[-1].arrival

    @property
    def outbound_duration(self) -> timedelta:
        return self.outbound[-1].arrival - self.outbound[0].departure

    @property
    def stops(self) -> int:
        """Stops on the direction with the most (what 'direct' filters on)."""
        directions = [d for d in (self.outbound, self.inbound) if d]
        return max(len(d) - 1 for d in directions)

    @property
    def total_duration(self) -> timedelta:
        total = self.outbound_duration
        if self.inbound:
            total += self.inbound[-1].arrival - self.inbound[0].departure
        return total

    @property
    def carriers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.carrier for s in self.segments))


class Gender(enum.StrEnum):
    FEMALE = "F"
    MALE = "M"


class Traveller(BaseModel):
    """One person on the booking, as their passport says.

    Names, birth date, document and contacts stay out of ``repr``, and a validation error never
    quotes what was given, so that no log line or traceback can carry them.
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    category: PassengerCategory
    first_name: str = Field(repr=False)
    last_name: str = Field(repr=False)
    birth_date: date = Field(repr=False)
    gender: Gender
    nationality: str  # ISO 3166-1 alpha-2
    passport_number: str = Field(repr=False)
    passport_expiry: date = Field(repr=False)
    email: str | None = Field(default=None, repr=False)
    phone: str | None = Field(default=None, repr=False)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passport_masked(self) -> str:
        return mask_document(self.passport_number)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


# Masks: the one way each personal detail is shown back, to travellers and admins alike.
def mask_document(number: str) -> str:
    """Show only the last four characters of a document number: '•••• 4567'."""
    if not number:
        return ""
    return "•••• " + number[-4:]


def mask_email(email: str | None) -> str:
    """An address shown without giving it away: 'maria@example.com' → 'm•••@example.com';
    '—' when there is none."""
    if not email:
        return "—"
    name, _, domain = email.rpartition("@")
    return f"{name[:1]}•••@{domain}" if name and domain else "•••"


def mask_phone(phone: str | None) -> str:
    """A phone number by its last three digits, like a document: '•••• 958'; '—' for none.
    The length is hidden too."""
    if not phone:
        return "—"
    digits = [c for c in phone if c.isdigit()]
    return "•••• " + "".join(digits[-3:]) if len(digits) > 3 else "••••"


class BookingStatus(enum.StrEnum):
    DRAFT = "draft"
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"

    @property
    def unpaid(self) -> bool:
        """Nobody has paid for it yet: a payment link can be made or renewed, and the traveller
        can still give it up. Every other status is past the payment stage."""
        return self in UNPAID_STATUSES

    @property
    def booked(self) -> bool:
        """Paid and the trip is on: ticketed, or being ticketed (revenue, trips to keep)."""
        return self in BOOKED_STATUSES

    @property
    def holds_payment(self) -> bool:
        """Money may be held on it that an admin can refund (a cancelled booking only if it
        was paid: check its payment intent too)."""
        return self in HOLDS_PAYMENT_STATUSES

    @property
    def live(self) -> bool:
        """It can still move with money involved, so its payment events are kept however old."""
        return self in LIVE_STATUSES

    @property
    def label(self) -> str:
        return {
            "draft": "Draft",
            "awaiting_payment": "Awaiting payment",
            "paid": "Paid, ticketing",
            "confirmed": "Confirmed",
            "expired": "Payment link expired",
            "failed": "Ticketing failed",
            "cancelled": "Cancelled",
            "refunded": "Refunded",
        }[self.value]


# The only moves a booking's status may make (ARCHITECTURE.md). A payment completed at the
# deadline still counts: money taken wins, so expired → paid is allowed. An unpaid booking the
# traveller gives up on (the payment page's Cancel, "Cancel this booking", /deletedata) is
# cancelled, not expired; a payment that still arrives for it is refunded (cancelled → refunded).
TRANSITIONS: dict[BookingStatus, frozenset[BookingStatus]] = {
    BookingStatus.DRAFT: frozenset({BookingStatus.AWAITING_PAYMENT, BookingStatus.CANCELLED}),
    BookingStatus.AWAITING_PAYMENT: frozenset(
        {BookingStatus.PAID, BookingStatus.EXPIRED, BookingStatus.CANCELLED}
    ),
    BookingStatus.EXPIRED: frozenset({BookingStatus.PAID, BookingStatus.CANCELLED}),
    BookingStatus.PAID: frozenset({BookingStatus.CONFIRMED, BookingStatus.FAILED}),
    BookingStatus.FAILED: frozenset({BookingStatus.REFUNDED}),
    BookingStatus.CONFIRMED: frozenset({BookingStatus.CANCELLED}),
    BookingStatus.CANCELLED: frozenset({BookingStatus.REFUNDED}),
    BookingStatus.REFUNDED: frozenset(),
}


# What a status allows, named once beside the moves (BookingStatus's properties ask these).
# Tuples in the enum's order, so code that lists bookings status by status stays in one order.
UNPAID_STATUSES: tuple[BookingStatus, ...] = (
    BookingStatus.DRAFT,
    BookingStatus.AWAITING_PAYMENT,
    BookingStatus.EXPIRED,
)
# Past the payment stage: paid at some point, or given up (a cancelled booking may be either).
PAST_PAYMENT_STATUSES: tuple[BookingStatus, ...] = tuple(
    s for s in BookingStatus if s not in UNPAID_STATUSES
)
BOOKED_STATUSES: tuple[BookingStatus, ...] = (BookingStatus.PAID, BookingStatus.CONFIRMED)
# Past the payment stage and not yet refunded in full.
HOLDS_PAYMENT_STATUSES: tuple[BookingStatus, ...] = tuple(
    s for s in PAST_PAYMENT_STATUSES if s is not BookingStatus.REFUNDED
)
# Money was taken for it (then kept, or given back): past the payment stage, except cancelled,
# which a booking given up before paying also reaches; a cancelled one was paid only if it
# records a payment intent. The admin's funnel counts these as "paid".
PAYMENT_TAKEN_STATUSES: tuple[BookingStatus, ...] = tuple(
    s for s in PAST_PAYMENT_STATUSES if s is not BookingStatus.CANCELLED
)
# Where a full refund leaves from: the statuses TRANSITIONS lets move to refunded.
REFUND_FROM_STATUSES: tuple[BookingStatus, ...] = tuple(
    s for s in BookingStatus if BookingStatus.REFUNDED in TRANSITIONS[s]
)
# Refunded is final; an expired booking's Checkout Session lasted at most 24 hours.
LIVE_STATUSES: tuple[BookingStatus, ...] = tuple(
    s for s in BookingStatus if s not in (BookingStatus.EXPIRED, BookingStatus.REFUNDED)
)


class IllegalTransitionError(ValueError):
    """A status move that TRANSITIONS does not allow."""


def check_transition(current: BookingStatus, new: BookingStatus) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransitionError(f"a booking cannot go from {current} to {new}")


class NewBooking(BaseModel):
    """What the bot knows when it creates a booking; storage adds id, reference and times."""

    # Errors validating a booking would otherwise quote its travellers.
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    user_id: int
    itinerary: Itinerary
    travellers: tuple[Traveller, ...]
    amount: Money
    status: BookingStatus = BookingStatus.DRAFT
    payment_deadline: AwareDatetime | None = None

    @property
    def passengers(self) -> Passengers:
        """The party the travellers make, counted by category."""
        return Passengers.counting(self.travellers)

    @property
    def origin(self) -> str:
        return self.itinerary.outbound[0].origin

    @property
    def destination(self) -> str:
        return self.itinerary.outbound[-1].destination

    @property
    def departure_date(self) -> date:
        return self.itinerary.outbound[0].departure.date()

    @property
    def return_date(self) -> date | None:
        inbound = self.itinerary.inbound
        return inbound[0].departure.date() if inbound else None


class Booking(NewBooking):
    """A stored booking."""

    id: str
    reference: str
    checkout_session_id: str | None = None
    payment_intent_id: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    refunded_minor: int = 0  # sent back to the traveller
    refund_pending_minor: int = 0  # claimed by a refund being sent right now
    checkout_renewals: int = 0  # payment links made after the first
    erase_after: AwareDatetime | None = None  # /deletedata waits for this trip to be over

    @property
    def refunded(self) -> Money:
        return Money(amount=self.refunded_minor, currency=self.amount.currency)

    @property
    def refundable(self) -> Money:
        """What is left to give back: the amount paid less refunds sent or being sent."""
        left = self.amount.amount - self.refunded_minor - self.refund_pending_minor
        return Money(amount=max(left, 0), currency=self.amount.currency)

    @property
    def trip_end(self) -> datetime:
        """When the last flight of the trip lands (the return's, for a round trip)."""
        return max(segment.arrival for segment in self.itinerary.segments)

    # The provider's order (Duffel order id, Kiwi booking id), made before the charge.
    provider_order_id: str | None = None
    # What the provider needs besides the id to pay the order (Kiwi's transaction id).
    provider_order_token: str | None = Field(default=None, repr=False)
    airline_reference: str | None = None  # the airline's booking reference (PNR)
    ticket_numbers: tuple[str, ...] = ()  # e-ticket numbers, once issued


class Profile(BaseModel):
    """One Telegram user as the bot knows them."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    user_id: int
    username: str | None = None
    first_name: str | None = None
    language: str | None = None
    blocked: bool = False
    bot_blocked: bool = False  # the user blocked the bot (Telegram said Forbidden)
    reminders: bool = True  # trip reminders (check-in, departure day): /reminders on|off
    saved_travellers: tuple[Traveller, ...] = ()
    created_at: AwareDatetime | None = None


class SearchLogEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    user_id: int | None
    origin: str
    destination: str
    departure: date
    return_date: date | None = None
    passengers: int = 1
    results: int = 0
    cached: bool = False


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    admin_id: int
    action: str
    target: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    created_at: AwareDatetime | None = None


class RouteCount(BaseModel):
    model_config = ConfigDict(frozen=True)

    origin: str
    destination: str
    count: int


class Stats(BaseModel):
    """What /stats shows for a period."""

    model_config = ConfigDict(frozen=True)

    since: AwareDatetime
    bookings_by_status: dict[BookingStatus, int]
    revenue: tuple[Money, ...]  # one per currency, from paid/confirmed bookings
    searches: int
    new_users: int
    top_routes: tuple[RouteCount, ...]


def utcnow() -> datetime:
    """The current instant, timezone-aware; computed at call time."""
    return datetime.now(UTC)


class BroadcastStatus(enum.StrEnum):
    RUNNING = "running"
    CANCELLED = "cancelled"
    DONE = "done"


class DeliveryStatus(enum.StrEnum):
    """One recipient of a broadcast: pending → sending → sent | failed | bot_blocked.

    ``interrupted`` marks a recipient whose worker died mid-send: it may or may not have
    arrived, and it is never sent again (nobody gets a broadcast twice).
    """

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    BOT_BLOCKED = "bot_blocked"
    INTERRUPTED = "interrupted"


class Broadcast(BaseModel):
    """An admin's message to every reachable user, delivered by a resumable worker."""

    model_config = ConfigDict(frozen=True)

    id: int
    admin_id: int
    text: str
    status: BroadcastStatus
    total: int  # recipients, duplicates counted once
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Fulfilment(BaseModel):
    """What ticketing a paid booking has got to, kept so a retry never buys twice.

    ``provider_order``: what an attempt placed with the provider (opaque to us; the adapter
    reads it back), in doubt until ``provider_booking_id`` says the ticket was issued."""

    model_config = ConfigDict(frozen=True)

    booking_id: str
    provider_order: str | None = None
    provider_booking_id: str | None = None
