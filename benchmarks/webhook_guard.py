"""CPU the webhook's front checks cost per request (bot/web_guard.py).

    uv run python -m benchmarks.webhook_guard

Prints microseconds per call (best of 5 runs of 20,000) for: parsing and shape-checking a
typical text update and a button press, the same for a refused one, and reading the Stripe
event JSON. For scale: benchmarks/throughput.py puts a whole update at about a millisecond of
CPU. No network, no services.
"""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable
from typing import Any

from bot.web_guard import RequestRefusedError, load_json, parse_update

TEXT: dict[str, Any] = {
    "update_id": 1,
    "message": {
        "message_id": 7,
        "date": int(time.time()),
        "chat": {"id": 4242, "type": "private", "first_name": "Ana"},
        "from": {"id": 4242, "is_bot": False, "first_name": "Ana", "language_code": "pt"},
        "text": "Lisbon to Tokyo on 20 January",
    },
}
BUTTON = {
    "update_id": 2,
    "callback_query": {
        "id": "4382bfdwdsb323b2d9",
        "from": {"id": 4242, "is_bot": False, "first_name": "Ana"},
        "chat_instance": "-3141592653589793",
        "data": "k2j4h1|pick|0.a1b2c3",
        "message": {
            "message_id": 6,
            "date": int(time.time()),
            "chat": {"id": 4242, "type": "private"},
            "text": "Results",
        },
    },
}
WRONG = json.loads(json.dumps(TEXT))
WRONG["message"]["text"] = 5
EVENT = {
    "id": "evt_1",
    "object": "event",
    "type": "checkout.session.completed",
    "created": int(time.time()),
    "data": {"object": {"id": "cs_1", "amount_total": 15456, "currency": "eur", "metadata": {}}},
}


def per_call(work: Callable[[], object], number: int = 20_000) -> float:
    return min(timeit.repeat(work, number=number, repeat=5)) / number * 1e6


def refused(body: bytes) -> Callable[[], object]:
    def run() -> object:
        try:
            return parse_update(body)
        except RequestRefusedError as error:
            return error

    return run


def main() -> None:
    text, button = json.dumps(TEXT).encode(), json.dumps(BUTTON).encode()
    event = json.dumps(EVENT).encode()
    cases: dict[str, Callable[[], object]] = {
        "text update, parse + shape check": lambda: parse_update(text),
        "button press, parse + shape check": lambda: parse_update(button),
        "refused update (text is a number)": refused(json.dumps(WRONG).encode()),
        "text update, json.loads alone": lambda: json.loads(text),
        "Stripe event, load_json": lambda: load_json(event),
    }
    for name, work in cases.items():
        print(f"{name:40} {per_call(work):7.1f} µs")


if __name__ == "__main__":
    main()
