"""All flows put together: the states, commands and global buttons the engine routes to."""

from __future__ import annotations

from conversations.data import load_conversation
from conversations.engine import Router
from conversations.flows import admin, booking, common, search


def build_router() -> Router:
    states = {**search.STATES, **booking.STATES, **admin.STATES}
    return Router(
        states=states,
        commands={**common.COMMANDS, **admin.COMMANDS},
        global_buttons=common.GLOBAL_BUTTONS,
        load_data=load_conversation,
        idle=common.IDLE,
        gate=admin.access_gate,
    )
