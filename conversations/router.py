"""The bot's flows, in menu order: adding a feature is one more line in ``FLOWS``."""

from __future__ import annotations

from conversations.data import Conversation, load_conversation
from conversations.deps import FlowDeps
from conversations.engine import Router
from conversations.flow import Flow, Registry
from conversations.flows import admin, alerts, booking, common, reminders, search

FLOWS: tuple[Flow[FlowDeps, Conversation], ...] = (
    common.FLOW,
    search.FLOW,
    booking.FLOW,
    alerts.FLOW,
    reminders.FLOW,
    admin.FLOW,
)


def build_registry() -> Registry[FlowDeps, Conversation]:
    """The flows checked against each other (a clash fails here, at start-up)."""
    return Registry(FLOWS, load_data=load_conversation, help_intro=common.HELP_INTRO)


def build_router() -> Router[FlowDeps, Conversation]:
    return build_registry().router()
