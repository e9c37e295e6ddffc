"""A feature's conversation, declared in one place, and the registry that puts flows together.

A ``Flow`` names its states (all starting with its prefix), its commands with their menu and
/help lines, its global buttons, and the buttons it adds to other flows' states. ``Registry``
builds the engine's ``Router`` from a list of flows and refuses, at start-up, anything two flows
would both claim: a state, a command, a global button, a button on a state. The command menus and
the /help text are generated from the same declarations, so a command cannot exist without its
menu and help lines, or the other way round.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

from conversations.engine import (
    GLOBAL_PREFIX,
    KEEP,
    ButtonHandler,
    DataT,
    DepsT,
    Event,
    Gate,
    Router,
    State,
    Step,
    TextHandler,
)
from conversations.state import Turn
from services.messages import Message


class FlowDeclarationError(ValueError):
    """Flows that cannot be put together as declared; raised when the router is built."""


class _ShowHelp:
    """The handler of the /help command: the registry answers it with the generated text."""

    def __repr__(self) -> str:
        return "SHOW_HELP"


SHOW_HELP = _ShowHelp()


@dataclass(frozen=True, slots=True)
class Command(Generic[DepsT, DataT]):
    """A slash command. ``menu`` is its description in Telegram's command menu and ``help`` its
    line in /help (empty: not listed there), after the command and its ``args`` as typed
    (``/reminders on|off — …``). ``position`` places it in both (lower first; equal positions
    keep the order of ``conversations.router.FLOWS``): the common flow's commands hold 10 to 90,
    so a feature picks the number between the ones it belongs between. ``admin`` lists it only
    in admins' menus, after the traveller commands; the handler itself refuses everyone else
    (``conversations.flows.admin.admin_command`` does, and audits the attempt), since a menu is
    no access control."""

    name: str
    handler: TextHandler[DepsT, DataT] | _ShowHelp
    menu: str
    help: str = ""
    args: str = ""
    admin: bool = False
    position: int = 50


@dataclass(frozen=True, slots=True)
class Extension(Generic[DepsT, DataT]):
    """Buttons a flow adds to another flow's state (booking's "Book" on the search's detail)."""

    state: str
    buttons: Mapping[str, ButtonHandler[DepsT, DataT]]


@dataclass(frozen=True, slots=True)
class Flow(Generic[DepsT, DataT]):
    """One feature's conversation: everything the router, menus and /help need from it.

    ``stored_states`` are names the flow writes into a chat's record without routing to them
    (``admin:blocked``, answered by the gate before any state is looked up); they count as the
    flow's states for its diagram. ``idle`` answers a chat in no state (one flow declares it)."""

    name: str
    prefix: str
    states: Sequence[State[DepsT, DataT]] = ()
    commands: Sequence[Command[DepsT, DataT]] = ()
    global_buttons: Mapping[str, ButtonHandler[DepsT, DataT]] = field(default_factory=dict)
    extends: Sequence[Extension[DepsT, DataT]] = ()
    stored_states: frozenset[str] = frozenset()
    idle: State[DepsT, DataT] | None = None
    gate: Gate[DepsT] | None = None

    def state_names(self) -> frozenset[str]:
        """Every state name the flow owns: routed ones and stored-only ones."""
        return frozenset(state.name for state in self.states) | self.stored_states


class Registry(Generic[DepsT, DataT]):
    """The flows of the bot, checked against each other; builds the router, menus and /help."""

    def __init__(
        self,
        flows: Sequence[Flow[DepsT, DataT]],
        *,
        load_data: Callable[[str | None, dict[str, Any]], DataT],
        help_intro: str,
    ) -> None:
        self.flows = tuple(flows)
        self._load_data = load_data
        self._help_intro = help_intro
        self._check_names()
        self.commands = self._collect_commands()
        self._states = self._collect_states()
        self._global_buttons = self._collect_global_buttons()
        self._idle = self._single_idle()
        self._gates = tuple(flow.gate for flow in self.flows if flow.gate is not None)

    # --- what the bot shows ------------------------------------------------------------------

    def menu(self, *, admin: bool) -> tuple[tuple[str, str], ...]:
        """(command, description) pairs for Telegram's menu: a traveller's, or an admin's
        (the traveller's commands first, then the admin ones)."""
        users = [(c.name, c.menu) for c in self.commands if not c.admin]
        admins = [(c.name, c.menu) for c in self.commands if c.admin] if admin else []
        return tuple(users + admins)

    def help_text(self) -> str:
        """The /help answer: the intro, then one line per traveller command that has one.
        Admin commands are not listed (admins find them in their menu and in /admin)."""
        lines = [
            f"/{' '.join(filter(None, (c.name, c.args)))} — {c.help}"
            for c in self.commands
            if c.help and not c.admin
        ]
        return f"{self._help_intro}\n\n" + "\n".join(lines)

    # --- the router -----------------------------------------------------------------------------

    def router(self) -> Router[DepsT, DataT]:
        return Router(
            states=self._states,
            commands={c.name: self._handler(c) for c in self.commands},
            global_buttons=self._global_buttons,
            load_data=self._load_data,
            idle=self._idle,
            gate=self._gate(),
        )

    def _handler(self, command: Command[DepsT, DataT]) -> TextHandler[DepsT, DataT]:
        if not isinstance(command.handler, _ShowHelp):
            return command.handler
        text = self.help_text()

        async def show_help(deps: DepsT, data: DataT, event: Event) -> Step:
            return Step(state=KEEP, data=data, replies=[Message(text=text)])

        return show_help

    def _gate(self) -> Gate[DepsT] | None:
        gates = self._gates
        if not gates:
            return None
        if len(gates) == 1:
            return gates[0]

        async def first_answer(deps: DepsT, turn: Turn, event: Event) -> Step | None:
            for gate in gates:
                step = await gate(deps, turn, event)
                if step is not None:
                    return step
            return None

        return first_answer

    # --- checks ---------------------------------------------------------------------------------

    def _check_names(self) -> None:
        names = [flow.name for flow in self.flows]
        _no_duplicates("flow", names)
        prefixes = [flow.prefix for flow in self.flows]
        _no_duplicates("state prefix", prefixes)
        for flow in self.flows:
            if not flow.prefix.endswith(":") or len(flow.prefix) < 2:
                raise FlowDeclarationError(
                    f"flow {flow.name!r}: prefix {flow.prefix!r} must be a name and a colon"
                )
            for other in self.flows:
                if other is not flow and other.prefix.startswith(flow.prefix):
                    raise FlowDeclarationError(
                        f"flows {flow.name!r} and {other.name!r}: prefix {other.prefix!r} "
                        f"starts with {flow.prefix!r}"
                    )
            for name in sorted(flow.state_names()):
                if not name.startswith(flow.prefix) or name == flow.prefix:
                    raise FlowDeclarationError(
                        f"flow {flow.name!r}: state {name!r} does not start with {flow.prefix!r}"
                    )

    def _collect_commands(self) -> tuple[Command[DepsT, DataT], ...]:
        in_order = [command for flow in self.flows for command in flow.commands]
        _no_duplicates("command", [f"/{c.name}" for c in in_order])
        commands = sorted(in_order, key=lambda command: command.position)  # stable: ties keep order
        for command in commands:
            if not command.menu:
                raise FlowDeclarationError(f"command /{command.name} has no menu description")
        if sum(isinstance(c.handler, _ShowHelp) for c in commands) > 1:
            raise FlowDeclarationError("more than one command shows the help")
        return tuple(commands)

    def _collect_states(self) -> dict[str, State[DepsT, DataT]]:
        _no_duplicates(
            "state",
            [
                name
                for flow in self.flows
                for name in (*(state.name for state in flow.states), *flow.stored_states)
            ],
        )
        states = {state.name: state for flow in self.flows for state in flow.states}
        added: dict[tuple[str, str], str] = {}  # (state, action) -> flow that added it
        for flow in self.flows:
            for extension in flow.extends:
                base = states.get(extension.state)
                if base is None:
                    raise FlowDeclarationError(
                        f"flow {flow.name!r} adds buttons to {extension.state!r}, "
                        "which no flow routes"
                    )
                for action in extension.buttons:
                    owner = added.get((extension.state, action))
                    if action in base.buttons or owner is not None:
                        raise FlowDeclarationError(
                            f"flow {flow.name!r} adds button {action!r} to "
                            f"{extension.state!r}, which already has one"
                            + (f" (from flow {owner!r})" if owner else "")
                        )
                    added[(extension.state, action)] = flow.name
                states[extension.state] = State(
                    base.name,
                    hint=base.hint,
                    on_text=base.on_text,
                    buttons={**base.buttons, **extension.buttons},
                )
        return states

    def _collect_global_buttons(self) -> dict[str, ButtonHandler[DepsT, DataT]]:
        actions = [action for flow in self.flows for action in flow.global_buttons]
        _no_duplicates("global button", actions)
        for action in actions:
            if not action.startswith(GLOBAL_PREFIX):
                raise FlowDeclarationError(
                    f"global button {action!r} must start with {GLOBAL_PREFIX!r}"
                )
        return {
            action: handler
            for flow in self.flows
            for action, handler in flow.global_buttons.items()
        }

    def _single_idle(self) -> State[DepsT, DataT]:
        idles = [flow.idle for flow in self.flows if flow.idle is not None]
        if len(idles) != 1:
            raise FlowDeclarationError(
                f"exactly one flow must answer a chat in no state; {len(idles)} do"
            )
        return idles[0]


def _no_duplicates(what: str, names: Sequence[str]) -> None:
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise FlowDeclarationError(f"{what} declared twice: {', '.join(twice)}")
