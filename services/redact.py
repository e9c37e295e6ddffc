"""Personal data out of log text: emails and phone numbers by their shape, and the very values
this process has handled (names, birth dates, passport numbers and expiries, contacts).

Logging is configured in ``bot/logs.py``; this module only knows text. A value is remembered
when it passes through the places that handle travellers (storage sealing and opening them,
the booking form), so a provider's error that quotes a passport number, or a traceback that
carries a name, is cleaned whichever worker logs it: that worker read the booking first. Values
are kept in memory only, at most ``LIMIT`` of them, the least recently seen forgotten first.
Passport numbers and dates have no shape of their own that would not also match booking
references, flight numbers and ordinary dates, hence remembering them instead.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any, Final

LIMIT: Final = 20_000
MIN_LENGTH: Final = 3  # shorter tokens ("PT", "F") are not worth hiding, and too common
PERSONAL_FIELDS: Final = (
    "first_name",
    "last_name",
    "birth_date",
    "passport_number",
    "passport_expiry",
    "email",
    "phone",
)

EMAIL: Final = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A number written with its country code: '+' or '00', then at least 7 more digits, spaced or not.
PHONE: Final = re.compile(r"(?<![\w+])(?:\+|00)\d(?:[\s().-]?\d){6,16}(?!\d)")
_TOKEN: Final = re.compile(r"[\w@+-]+(?:[.\-/][\w@+-]+)*")
_PARTS: Final = re.compile(r"([./])")  # kept by split, so the token is put back as it was

REDACTED: Final = "<redacted>"


class Redactor:
    """Cleans text of personal data; ``remember`` adds values to look for."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._known: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()  # log records are made from aiosqlite's thread too

    def remember(self, values: Iterable[object]) -> None:
        with self._lock:
            for value in values:
                for form in _forms(value):
                    self._known[form] = None
                    self._known.move_to_end(form)
            while len(self._known) > self._limit:
                self._known.popitem(last=False)

    def remember_traveller(self, traveller: Mapping[str, Any]) -> None:
        self.remember(traveller.get(name) for name in PERSONAL_FIELDS)

    def clean(self, text: str) -> str:
        if "@" in text:
            text = EMAIL.sub("<email>", text)
        text = PHONE.sub("<phone>", text)
        if not self._known:
            return text
        known = self._known

        def hide(match: re.Match[str]) -> str:
            token = match.group(0)
            if token.casefold() in known:
                return REDACTED
            # 'SILVA/MARIA', as tickets print a name: each part is looked for too.
            parts = _PARTS.split(token)
            if len(parts) == 1:
                return token
            return "".join(REDACTED if part.casefold() in known else part for part in parts)

        return _TOKEN.sub(hide, text)

    def __len__(self) -> int:
        return len(self._known)


def _forms(value: object) -> list[str]:
    """The ways a value may be written in a log line, case-folded."""
    if value is None:
        return []
    if isinstance(value, date):
        day = value
    else:
        text = str(value).strip()
        if len(text) < MIN_LENGTH:
            return []
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return [text.casefold(), *(part.casefold() for part in text.split() if len(part) >= 4)]
    return [
        day.isoformat(),
        f"{day:%d.%m.%Y}",
        f"{day:%d/%m/%Y}",
        f"{day:%m/%d/%Y}",
        f"{day.day}.{day.month}.{day.year}",
    ]


# The process's redactor, once logging is set up (bot/logs.py); until then nothing is kept.
_active: Redactor | None = None


def activate(redactor: Redactor) -> None:
    global _active  # noqa: PLW0603 - logging itself is process-wide
    _active = redactor


def active() -> Redactor | None:
    return _active


def remember(*values: object) -> None:
    """Hide these values from every later log line of this process."""
    if _active is not None:
        _active.remember(values)


def remember_traveller(traveller: Mapping[str, Any]) -> None:
    """Hide a traveller's names, birth date, document and contacts from later log lines."""
    if _active is not None:
        _active.remember_traveller(traveller)
