"""Each flow's diagram (conversations/flows/<flow>.mmd) names exactly the states the flow
declares, so a diagram cannot silently fall behind the code.

In a diagram every node is given a label (``state "search:origin" as search_origin``): a label
that looks like a state name (``prefix:name``) is a state, anything else (``any state``) is a
description. The flow's own states are those with its prefix; states of other flows that a
diagram shows (where a transition leads) must exist too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conversations.data import Conversation
from conversations.deps import FlowDeps
from conversations.flow import Flow
from conversations.router import FLOWS

FLOWS_DIR = Path(__file__).resolve().parent.parent / "conversations" / "flows"
LABEL = re.compile(r'^\s*state\s+"([^"]+)"\s+as\s+(\w+)\s*$')
TRANSITION = re.compile(r"^\s*(\[\*\]|\w+)\s*-->\s*(\[\*\]|\w+)\s*(?::|$)")
STATE_NAME = re.compile(r"^[a-z_]+:[a-z_]+$")
ALL_STATES = frozenset(name for flow in FLOWS for name in flow.state_names())


def read_diagram(path: Path) -> tuple[dict[str, str], set[str]]:
    """The diagram's labels by alias, and the aliases its transitions use."""
    labels: dict[str, str] = {}
    used: set[str] = set()
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("%%"):
            continue
        if match := LABEL.match(line):
            labels[match.group(2)] = match.group(1)
        elif match := TRANSITION.match(line):
            used |= {match.group(1), match.group(2)} - {"[*]"}
    return labels, used


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.name)
def test_diagram_names_exactly_the_flows_states(flow: Flow[FlowDeps, Conversation]) -> None:
    path = FLOWS_DIR / f"{flow.name}.mmd"
    assert path.exists(), f"flow {flow.name!r} has no diagram at {path}"
    labels, used = read_diagram(path)
    unlabelled = used - labels.keys()
    assert not unlabelled, f"{path.name}: nodes without a state label: {sorted(unlabelled)}"
    named = {label for label in labels.values() if STATE_NAME.match(label)}
    own = {name for name in named if name.startswith(flow.prefix)}
    assert own == set(flow.state_names()), (
        f"{path.name}: only in the diagram {sorted(own - flow.state_names())}, "
        f"only in the code {sorted(flow.state_names() - own)}"
    )
    assert named <= ALL_STATES, f"{path.name}: no flow declares {sorted(named - ALL_STATES)}"
