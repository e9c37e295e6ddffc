"""The one happy-path booking: /start, a whole search in one message, pick, one adult's
details, Pay. Played by the flow tests at the engine seam (tests/support/flowkit.py), the fuzz
test (to reach its states), the console test (tests/test_cli.py, a real process) and the
throughput benchmark (webhook updates), each through its own driver. Paying is the driver's:
the sandbox checkout, then ``CONFIRMED`` is what the traveller is told.

Twelve turns from /start to the payment link: the budget UX.md sets for a one-adult one-way
booking, which the console test holds the script to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class Move:
    """One thing the traveller does: types ``text``, or presses the button labelled ``press``
    (exactly, else containing it) on the newest message that shows one. ``expect``: a plain-text
    fragment of what the bot answers; ``state``: the conversation state it leads to."""

    text: str | None = None
    press: str | None = None
    expect: str = ""
    state: str | None = None
    search: bool = False  # this move runs a flight search
    checkout: bool = False  # the answer carries the payment link

    @property
    def said(self) -> str:
        """What the traveller typed or pressed, for messages about a failed move."""
        return self.text if self.text is not None else f"[{self.press}]"


ORIGIN = "Lisbon"
DESTINATION = "Tokyo"
NAME = "Maria Silva"
PRINTED_NAME = "SILVA/MARIA"
BIRTH_DATE = "17.05.1990"
NATIONALITY = "Portugal"
PASSPORT = "CA1234567"
PASSPORT_MASKED = "•••• 4567"
PASSPORT_EXPIRY = "2031-08-20"
EMAIL = "maria@example.com"
# What the traveller is told once the sandbox payment is applied (a notification, not a turn).
CONFIRMED = "Booking confirmed"


def search_text(departure: date) -> str:
    """The whole search typed at once, the date as a person writes it ("20 March")."""
    return f"{ORIGIN} to {DESTINATION} on {departure.day} {departure:%B}"


# One adult's details, from the first question (asked with the picked flight) to the review.
TRAVELLER_MOVES = (
    Move(text=NAME, expect=f"On the ticket: {PRINTED_NAME}", state="book:field"),
    Move(text=BIRTH_DATE, expect="Gender", state="book:field"),
    Move(press="Female", expect="Nationality", state="book:field"),
    Move(text=NATIONALITY, expect="Passport number", state="book:field"),
    Move(text=PASSPORT, expect="Passport expiry", state="book:field"),
    Move(text=PASSPORT_EXPIRY, expect="Email", state="book:field"),
    Move(text=EMAIL, expect="Phone", state="book:field"),
    Move(press="Skip", expect="Total: €", state="book:review"),
)


def booking_script(departure: date) -> tuple[Move, ...]:
    """From /start to the payment link, leaving on ``departure`` (within the next year)."""
    return (
        Move(text="/start", expect="Where are you flying from?", state="search:origin"),
        Move(text=search_text(departure), expect="Page 1 of", state="search:results", search=True),
        Move(press="1", expect="Price checked", state="book:field"),
        *TRAVELLER_MOVES,
        Move(press="Pay", expect="is held for you", state="book:payment", checkout=True),
    )


def moves_to(state: str, departure: date) -> tuple[Move, ...]:
    """The script up to the first move that reaches ``state``."""
    script = booking_script(departure)
    for count, move in enumerate(script, start=1):
        if move.state == state:
            return script[:count]
    raise ValueError(f"the happy path never reaches {state}")
