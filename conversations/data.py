"""What a chat's conversation remembers between updates, validated when loaded.

One model for every flow: the search draft, the results view, and the booking draft. Only small
things live here; search results themselves stay in the search cache, keyed by the query.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from services import redact
from services.models import Cabin, Itinerary, Location, PassengerCategory, SearchQuery
from services.money import Money


class _Data(BaseModel):
    # Values typed by travellers (passport numbers among them) must not leak into error logs.
    model_config = ConfigDict(hide_input_in_errors=True, extra="ignore")


class SearchDraft(_Data):
    origin: Location | None = None
    destination: Location | None = None
    choices: list[Location] = Field(default_factory=list)  # an ambiguous place being picked
    suggestions: list[str] = Field(default_factory=list)  # "did you mean" names
    round_trip: bool | None = None
    departure: date | None = None
    return_date: date | None = None
    calendar_month: date | None = None  # first day of the month the calendar shows
    adults: int = 1
    children: int = 0
    infants: int = 0
    cabin: Cabin = Cabin.ECONOMY
    # The rest of a whole search typed in one message, as typed, for the steps still to come.
    pending_destination: str | None = None
    pending_departure: str | None = None
    pending_return: str | None = None


class ResultsView(_Data):
    query: SearchQuery
    sort: str = "price"  # price | duration | departure
    direct_only: bool = False
    page: int = 0
    search_id: int | None = None
    shown_id: str | None = None  # itinerary in the detail view


class TravellerDraft(_Data):
    category: PassengerCategory
    values: dict[str, Any] = Field(default_factory=dict)  # normalized field values


class BookingDraft(_Data):
    itinerary: Itinerary
    travellers: list[TravellerDraft]
    current: int = 0  # traveller being asked
    field: str = "first_name"
    editing: bool = False  # came from review: return there after one field
    reference: str | None = None  # set once Pay created the booking

    def checked_out(self, reference: str) -> BookingDraft:
        """The draft once Pay has created booking ``reference``: the travellers' details now live
        (encrypted) on the booking, so the conversation keeps only who was travelling, not their
        names, documents or contacts, which would otherwise sit in the state store until the
        conversation expires."""
        return self.model_copy(
            update={
                "reference": reference,
                "travellers": [TravellerDraft(category=t.category) for t in self.travellers],
                "current": 0,
                "field": "first_name",
                "editing": False,
            }
        )


class PendingRefund(_Data):
    """A refund the admin asked for and has not confirmed yet (amount None: in full)."""

    reference: str
    amount: int | None = None  # minor units of ``currency``
    currency: str
    reason: str = ""


class AdminDraft(_Data):
    """An admin step in progress: what is awaiting confirmation, and where to go back after."""

    return_to: str | None = None  # the state the admin left for this step
    asking: str | None = None  # menu command waiting for its argument, e.g. "booking"
    refund: PendingRefund | None = None
    broadcast_text: str | None = None  # Telegram HTML, already escaped
    recipients: int | None = None  # count shown in the preview


class AlertDraft(_Data):
    """ "Watch this route" waiting for its target price: the cheapest fare when it was tapped
    (the search itself is the results view's)."""

    lowest: Money | None = None


class Conversation(_Data):
    search: SearchDraft = Field(default_factory=SearchDraft)
    results: ResultsView | None = None
    booking: BookingDraft | None = None
    pending: str | None = None  # a confirmation in progress, e.g. "deletedata"
    admin: AdminDraft | None = None
    alert: AlertDraft | None = None
    # The state this conversation was loaded in; not stored. Lets an admin step return the
    # admin to where they were (commands are not told the state otherwise).
    _loaded_state: str | None = PrivateAttr(default=None)

    @property
    def loaded_state(self) -> str | None:
        return self._loaded_state


def load_conversation(state: str | None, data: dict[str, Any]) -> Conversation:
    conversation = Conversation.model_validate(data)
    conversation._loaded_state = state
    if conversation.booking is not None:
        # Whatever this turn logs, it must not quote the form's answers (services/redact.py).
        for traveller in conversation.booking.travellers:
            redact.remember_traveller(traveller.values)
    return conversation
