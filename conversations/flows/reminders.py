"""Trip reminders on or off: /reminders, and the buttons that switch them from any state.

The reminders themselves are sent by a scheduled job (services/reminders.py); this flow only
keeps the traveller's choice on their profile. It has no states: the command and its buttons
answer wherever the traveller is and leave the conversation as it was.
"""

from __future__ import annotations

from conversations.data import Conversation
from conversations.deps import FlowDeps
from conversations.engine import KEEP, Event, Pressed, Step
from conversations.flow import Command, Flow
from services.messages import Button, Message, esc

FROM_MENU = "menu"  # the button's arg when pressed on /reminders' own message: edit it


def _keep(conv: Conversation | None, message: Message) -> Step:
    return Step(state=KEEP, data=conv, replies=[message])


def status_message(on: bool, *, edit: bool = False) -> Message:
    """The setting as it is, with the button that switches it."""
    if on:
        text = (
            "🔔 <b>Trip reminders are on.</b>\n"
            "For each paid trip I message you when online check-in opens (24 hours before "
            "departure for most airlines) and on the day of the flight."
        )
        button = Button(label="Turn reminders off", action="!remindersoff", arg=FROM_MENU)
    else:
        text = (
            "🔕 <b>Trip reminders are off.</b>\n"
            "Turn them on to be told when online check-in opens and on the day of the flight."
        )
        button = Button(label="Turn reminders on", action="!reminderson", arg=FROM_MENU)
    return Message(text=text, buttons=((button,),), edit=edit)


async def cmd_reminders(deps: FlowDeps, conv: Conversation | None, event: Event) -> Step:
    wanted = event.text.strip().lower()
    if not wanted:
        profile = await deps.storage.get_profile(event.user.id)
        return _keep(conv, status_message(profile.reminders if profile else True))
    if wanted in ("on", "off"):
        profile = await deps.storage.set_reminders(event.user.id, wanted == "on")
        return _keep(conv, status_message(profile.reminders))
    shown = event.text.strip()[:40]
    return _keep(
        conv,
        Message(
            text=f"“{esc(shown)}” is not a setting: use /reminders on or /reminders off "
            "(or /reminders to see the current one)."
        ),
    )


async def _switch(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed, *, on: bool
) -> Step:
    profile = await deps.storage.set_reminders(event.user.id, on)
    # On /reminders' own message the setting is shown again in place; on a reminder, the
    # reminder stays as it is and the answer follows it.
    return _keep(conv, status_message(profile.reminders, edit=pressed.arg == FROM_MENU))


async def btn_reminders_off(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    return await _switch(deps, conv, event, pressed, on=False)


async def btn_reminders_on(
    deps: FlowDeps, conv: Conversation | None, event: Event, pressed: Pressed
) -> Step:
    return await _switch(deps, conv, event, pressed, on=True)


FLOW: Flow[FlowDeps, Conversation] = Flow(
    name="reminders",
    prefix="reminders:",
    commands=(
        Command(
            "reminders",
            cmd_reminders,
            menu="Trip reminders on or off",
            help="check-in and travel-day reminders for your trips",
            args="on|off",
            position=60,
        ),
    ),
    global_buttons={"!remindersoff": btn_reminders_off, "!reminderson": btn_reminders_on},
)
