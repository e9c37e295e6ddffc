"""Traveller details as typed in a chat: one field at a time, checked and normalized.

Each ``parse_*`` function takes what the traveller typed for one field and returns the value to
store, or raises ``FieldError`` with a message that names the field and says what to type instead;
the conversation shows it and stays on that field. ``build_traveller`` re-checks a whole set of
collected values (so an edit at review is checked against the rest) and returns the ``Traveller``.

Decisions (airline practice, as booking systems and the passport's machine-readable zone want):
- Names are returned in CAPITALS, as passports print them. Accented Latin letters are
  transliterated by the ICAO Doc 9303 table the passport's machine-readable line uses
  (É→E, Ñ→N, Ü→UE, Ø→OE, ß→SS…); other scripts are refused with a request for Latin letters.
  Someone whose passport spells Ü as U just types U: plain A–Z is kept as typed.
- Dates are read day-first ("05/06/1990" is 5 June); month-first only when day-first is
  impossible ("05/17/1990"). A two-digit year is refused rather than guessed.
- Age categories are counted on the date of the last flight (airline convention): a child who
  turns 12 before it is an adult, an infant who turns 2 before it needs a seat as a child.
- The passport must expire after the day of the last flight; one expiring on the return day is
  refused (a late or overnight flight would land on an expired passport). Destination rules such
  as "six months beyond the stay" vary by country and are not applied here.
- Trip dates are passed as ``first_day`` / ``last_day``: the local departure dates of the first
  and last flights (``travel_dates(itinerary)``).

Passport numbers, emails and phone numbers never appear in an error message or its cause.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from functools import cache
from typing import Any

import pycountry
from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError
from rapidfuzz import fuzz, process

from services.flights.dates import format_date, format_day
from services.models import (
    Gender,
    Itinerary,
    PassengerCategory,
    Traveller,
    today_anywhere,
)

NAME_MAX = 40
PASSPORT_MIN, PASSPORT_MAX = 5, 20
PHONE_MIN_DIGITS, PHONE_MAX_DIGITS = 7, 15
OLDEST_AGE = 120
# Passports are issued for ten years at most; a little slack for renewals that carry time over.
PASSPORT_MAX_YEARS = 11
CHILD_FROM_AGE, ADULT_FROM_AGE = 2, 12

# The date that is already 'today' somewhere: a baby born today in Auckland is not in the future.
_LATEST_ZONE = timezone(timedelta(hours=14))


class TravellerField(enum.StrEnum):
    """The fields asked for each traveller, in the order they are asked; values are the
    ``Traveller`` attribute names so stored drafts and errors line up with the model."""

    FIRST_NAME = "first_name"
    LAST_NAME = "last_name"
    BIRTH_DATE = "birth_date"
    GENDER = "gender"
    NATIONALITY = "nationality"
    PASSPORT_NUMBER = "passport_number"
    PASSPORT_EXPIRY = "passport_expiry"
    EMAIL = "email"
    PHONE = "phone"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def hint(self) -> str:
        """What to type, for the question that asks for this field."""
        return _HINTS[self]


_LABELS = {
    TravellerField.FIRST_NAME: "First name",
    TravellerField.LAST_NAME: "Last name",
    TravellerField.BIRTH_DATE: "Date of birth",
    TravellerField.GENDER: "Gender",
    TravellerField.NATIONALITY: "Nationality",
    TravellerField.PASSPORT_NUMBER: "Passport number",
    TravellerField.PASSPORT_EXPIRY: "Passport expiry",
    TravellerField.EMAIL: "Email",
    TravellerField.PHONE: "Phone",
}

_HINTS = {
    TravellerField.FIRST_NAME: "first and middle names as in the passport, e.g. MARIA",
    TravellerField.LAST_NAME: "last name as in the passport, e.g. GARCIA",
    TravellerField.BIRTH_DATE: "day, month and year, e.g. 17.05.1990 or 17 May 1990",
    TravellerField.GENDER: "F or M, as the airline needs it",
    TravellerField.NATIONALITY: "the country that issued the passport, e.g. Germany or DE",
    TravellerField.PASSPORT_NUMBER: "letters and digits as printed on the passport, e.g. X1234567",
    TravellerField.PASSPORT_EXPIRY: "the date the passport expires, e.g. 17.05.2031",
    TravellerField.EMAIL: "the address for the booking confirmation, e.g. name@example.com",
    TravellerField.PHONE: "with the country code, e.g. +44 20 7946 0958, or skip",
}

FIELD_ORDER: tuple[TravellerField, ...] = tuple(TravellerField)
# What the passport gives, asked of everyone; contacts are asked of the lead traveller only.
PERSON_FIELDS: tuple[TravellerField, ...] = FIELD_ORDER[: FIELD_ORDER.index(TravellerField.EMAIL)]
LEAD_FIELDS: tuple[TravellerField, ...] = (TravellerField.EMAIL, TravellerField.PHONE)


def fields_for(index: int) -> tuple[TravellerField, ...]:
    """The fields kept for traveller ``index`` of a booking (0 is the lead)."""
    return PERSON_FIELDS + (LEAD_FIELDS if index == 0 else ())


class FieldError(ValueError):
    """One field's value was refused; ``str()`` is the message for the traveller."""

    def __init__(
        self, field: TravellerField, problem: str, *, suggestions: tuple[str, ...] = ()
    ) -> None:
        self.field = field
        self.problem = problem
        # Values the flow may offer as buttons (nationality: alpha-2 codes), best first.
        self.suggestions = suggestions
        super().__init__(f"{field.label}: {problem}")

    @property
    def message(self) -> str:
        return str(self)


def travel_dates(itinerary: Itinerary) -> tuple[date, date]:
    """(first_day, last_day): the local departure dates of the trip's first and last flights."""
    ordered = sorted(itinerary.segments, key=lambda segment: segment.departure)
    return ordered[0].departure.date(), ordered[-1].departure.date()


# --------------------------------------------------------------------------- names

# ICAO Doc 9303 part 3 transliterations that are not simply "drop the accent".
_ICAO_SPECIAL = {
    "Ä": "AE",
    "Å": "AA",
    "Æ": "AE",
    "Ö": "OE",
    "Ø": "OE",
    "Œ": "OE",
    "Ü": "UE",
    "ß": "SS",
    "ẞ": "SS",
    "Þ": "TH",
    "Ð": "D",
    "Đ": "D",
    "Ħ": "H",
    "Ĳ": "IJ",
    "Ł": "L",
    "Ŀ": "L",
    "Ŋ": "N",
    "Ŧ": "T",
}
_APOSTROPHES = dict.fromkeys(map(ord, "’‘ʼ`´′ʹ"), "'")
_HYPHENS = dict.fromkeys(map(ord, "‐‑‒–—−"), "-")
_NAME_SHAPE = re.compile(r"[A-Z]+(?:[ '-][A-Z]+)*")


def _latin(char: str) -> str | None:
    """The A–Z spelling of one letter, or None when it is not a Latin letter."""
    upper = char.upper()
    if upper in _ICAO_SPECIAL:
        return _ICAO_SPECIAL[upper]
    base = "".join(c for c in unicodedata.normalize("NFKD", upper) if not unicodedata.combining(c))
    return base if base.isascii() and base.isalpha() else None


def _parse_name(field: TravellerField, text: str, example: str) -> str:
    cleaned = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).translate(_HYPHENS)
    cleaned = " ".join(cleaned.split())
    cleaned = re.sub(r" ?([-']) ?", r"\1", cleaned)
    if not cleaned:
        raise FieldError(field, f"type it as in the passport, e.g. {example}")
    letters: list[str] = []
    for char in cleaned:
        if char in " -'":
            letters.append(char)
            continue
        latin = _latin(char) if char.isalpha() else None
        if latin is not None:
            letters.append(latin)
        elif char.isdigit():
            raise FieldError(
                field, f"names have no digits; type it as in the passport, e.g. {example}"
            )
        elif char.isalpha():
            raise FieldError(field, f"use Latin letters as in your passport (A–Z), e.g. {example}")
        else:
            raise FieldError(
                field,
                f"use only letters, spaces, hyphens (-) and apostrophes ('), e.g. {example}",
            )
    name = "".join(letters)
    if len(name) > NAME_MAX:
        raise FieldError(
            field, f"at most {NAME_MAX} characters; type it as in the passport, e.g. {example}"
        )
    if not _NAME_SHAPE.fullmatch(name):
        raise FieldError(
            field, "hyphens and apostrophes go between letters, e.g. ANNA-MARIA or O'NEIL"
        )
    return name


def parse_first_name(text: str) -> str:
    """First (and middle) names in capitals, e.g. 'josé maría' → 'JOSE MARIA'."""
    return _parse_name(TravellerField.FIRST_NAME, text, "MARIA")


def parse_last_name(text: str) -> str:
    """Last name in capitals, e.g. 'Müller' → 'MUELLER', "o’neil" → "O'NEIL"."""
    return _parse_name(TravellerField.LAST_NAME, text, "GARCIA")


# --------------------------------------------------------------------------- dates

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_NUMERIC_DATE = re.compile(r"(\d{1,4})[./\- ](\d{1,2})[./\- ](\d{1,4})")


class _DateProblem(enum.Enum):
    UNREADABLE = "unreadable"
    SHORT_YEAR = "short year"
    NO_SUCH_DAY = "no such day"


class _DateParseError(ValueError):
    def __init__(self, problem: _DateProblem) -> None:
        self.problem = problem
        super().__init__(problem.value)


def _make_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _numeric_date(first: str, second: str, third: str) -> date:
    if len(first) == 4 and len(third) <= 2:  # 1990-05-17
        found = _make_date(int(first), int(second), int(third))
    elif len(third) == 4 and len(first) <= 2:  # 17.05.1990, or 05/17/1990 when it can't be
        found = _make_date(int(third), int(second), int(first)) or _make_date(
            int(third), int(first), int(second)
        )
    elif len(first) <= 2 and len(third) <= 2:
        raise _DateParseError(_DateProblem.SHORT_YEAR)
    else:
        raise _DateParseError(_DateProblem.UNREADABLE)
    if found is None:
        raise _DateParseError(_DateProblem.NO_SUCH_DAY)
    return found


def _compact_date(digits: str) -> date:
    """'19900517' or '17051990', when only one reading is a plausible date."""
    readings = {
        found
        for found in (
            _make_date(int(digits[:4]), int(digits[4:6]), int(digits[6:])),
            _make_date(int(digits[4:]), int(digits[2:4]), int(digits[:2])),
        )
        if found is not None and 1800 <= found.year <= 2200
    }
    if len(readings) != 1:
        raise _DateParseError(_DateProblem.UNREADABLE)
    return readings.pop()


def _worded_date(tokens: list[str]) -> date:
    """'17 May 1990', 'May 17 1990', '1990 May 17' (English month names)."""
    months = [t for t in tokens if t in _MONTHS]
    numbers = [t for t in tokens if t.isdigit()]
    if len(months) != 1 or len(numbers) != 2 or len(tokens) != 3:
        raise _DateParseError(_DateProblem.UNREADABLE)
    years = [n for n in numbers if len(n) == 4]
    days = [n for n in numbers if len(n) <= 2]
    if len(years) != 1 or len(days) != 1:
        if not years and len(days) == 2:
            raise _DateParseError(_DateProblem.SHORT_YEAR)
        raise _DateParseError(_DateProblem.UNREADABLE)
    found = _make_date(int(years[0]), _MONTHS[months[0]], int(days[0]))
    if found is None:
        raise _DateParseError(_DateProblem.NO_SUCH_DAY)
    return found


def _read_date(text: str) -> date:
    cleaned = unicodedata.normalize("NFKC", text).strip().lower()
    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", cleaned)
    cleaned = re.sub(r"\bof\b", " ", cleaned)
    cleaned = re.sub(r"(?<=[a-z])\.", " ", cleaned).replace(",", " ")
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > 40:
        raise _DateParseError(_DateProblem.UNREADABLE)
    if match := _NUMERIC_DATE.fullmatch(cleaned):
        return _numeric_date(*match.groups())
    if cleaned.isdigit() and len(cleaned) == 8:
        return _compact_date(cleaned)
    tokens = re.findall(r"[a-z]+|\d+", cleaned)
    if "".join(tokens) != re.sub(r"[ ./-]", "", cleaned):
        raise _DateParseError(_DateProblem.UNREADABLE)
    return _worded_date(tokens)


def _parse_date(field: TravellerField, text: str, example: str) -> date:
    try:
        return _read_date(text)
    except _DateParseError as error:
        if error.problem is _DateProblem.SHORT_YEAR:
            problem = f"type the year in full, e.g. {example}"
        elif error.problem is _DateProblem.NO_SUCH_DAY:
            problem = f"that day does not exist; check the day and month, e.g. {example}"
        else:
            problem = f"type day, month and year, e.g. {example} or {_worded(example)}"
        raise FieldError(field, problem) from None


def _worded(numeric_example: str) -> str:
    day, month, year = (int(part) for part in numeric_example.split("."))
    return format_date(date(year, month, day))


def age_on(birth_date: date, day: date) -> int:
    """Full years of age on ``day`` (someone born on 29 Feb turns a year older on 1 Mar)."""
    before_birthday = (day.month, day.day) < (birth_date.month, birth_date.day)
    return day.year - birth_date.year - before_birthday


def category_for(birth_date: date, travel_date: date) -> PassengerCategory:
    """The fare category airlines give someone born on ``birth_date`` flying on
    ``travel_date`` (pass the date of the last flight)."""
    age = age_on(birth_date, travel_date)
    if age < CHILD_FROM_AGE:
        return PassengerCategory.INFANT
    if age < ADULT_FROM_AGE:
        return PassengerCategory.CHILD
    return PassengerCategory.ADULT


_CATEGORY_WORDS = {
    PassengerCategory.ADULT: "an adult (12 or older)",
    PassengerCategory.CHILD: "a child (2 to 11)",
    PassengerCategory.INFANT: "an infant (under 2, on a lap)",
}


def parse_birth_date(
    text: str,
    *,
    category: PassengerCategory | None = None,
    first_day: date | None = None,
    last_day: date | None = None,
    today: date | None = None,
) -> date:
    """A date of birth that is past (and before ``first_day``, the first flight) and, given
    ``category`` and ``last_day``, matches the fare category booked for this traveller on the
    day of the last flight."""
    field = TravellerField.BIRTH_DATE
    born = _parse_date(field, text, "17.05.1990")
    now = today or datetime.now(_LATEST_ZONE).date()
    if born > now or (first_day is not None and born > first_day):
        raise FieldError(field, "that date is in the future; type the date of birth")
    if age_on(born, now) >= OLDEST_AGE:
        raise FieldError(field, "check the year: that would be over 120 years ago")
    if category is not None and last_day is not None:
        actual = category_for(born, last_day)
        if actual is not category:
            age = age_on(born, last_day)
            years = f"{age} year" + ("" if age == 1 else "s")
            raise FieldError(
                field,
                f"on the last flight ({format_day(last_day, today=now)}) this traveller will be "
                f"{years} old, which airlines book as {_CATEGORY_WORDS[actual]}, not as "
                f"{_CATEGORY_WORDS[category]}. Check the date, or start a new search "
                "with the right travellers.",
            )
    return born


def date_readings(text: str) -> tuple[date, date] | None:
    """Both dates a full numeric date could mean when day and month could swap
    ("12/08/1988": 12 August or 8 December), day-first first; None when it has one reading."""
    cleaned = " ".join(unicodedata.normalize("NFKC", str(text)).strip().split())
    match = _NUMERIC_DATE.fullmatch(cleaned)
    if not match or len(match[3]) != 4 or len(match[1]) > 2:
        return None
    first, second, year = int(match[1]), int(match[2]), int(match[3])
    if first == second or not (1 <= first <= 12 and 1 <= second <= 12):
        return None
    day_first, month_first = _make_date(year, second, first), _make_date(year, first, second)
    if day_first is None or month_first is None:
        return None
    return day_first, month_first


def parse_passport_expiry(
    text: str, *, last_day: date | None = None, today: date | None = None
) -> date:
    """A passport expiry date after ``last_day`` (the last flight) and not absurdly far."""
    field = TravellerField.PASSPORT_EXPIRY
    expires = _parse_date(field, text, "17.05.2031")
    now = today or today_anywhere()
    if expires < now:
        raise FieldError(
            field, "this passport has expired; airlines need a valid one. Use another passport."
        )
    if last_day is not None and expires <= last_day:
        raise FieldError(
            field,
            f"the passport must still be valid after the last flight "
            f"({format_day(last_day, today=now)}), and this one is not. Use another passport, "
            "or renew this one first.",
        )
    if expires > _add_years(now, PASSPORT_MAX_YEARS):
        raise FieldError(
            field, "check the year: passports are valid for 10 years at most, e.g. 17.05.2031"
        )
    return expires


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 Feb into a common year
        return day.replace(year=day.year + years, day=28)


# --------------------------------------------------------------------------- gender

_GENDERS = {
    "f": Gender.FEMALE,
    "female": Gender.FEMALE,
    "w": Gender.FEMALE,
    "woman": Gender.FEMALE,
    "♀": Gender.FEMALE,
    "m": Gender.MALE,
    "male": Gender.MALE,
    "man": Gender.MALE,
    "♂": Gender.MALE,
}


def parse_gender(text: str) -> Gender:
    """F or M: 'f', 'Female', 'M', 'male'…"""
    key = unicodedata.normalize("NFKC", text).strip().strip(".").casefold()
    try:
        return _GENDERS[key]
    except KeyError:
        raise FieldError(
            TravellerField.GENDER, "type F or M (female or male), as the airline needs it"
        ) from None


# --------------------------------------------------------------------------- nationality

# Names people use that ISO does not (or spells differently).
_COUNTRY_ALIASES = {
    "uk": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "usa": "US",
    "us": "US",
    "america": "US",
    "united states": "US",
    "uae": "AE",
    "emirates": "AE",
    "russia": "RU",
    "holland": "NL",
    "the netherlands": "NL",
    "czech republic": "CZ",
    "turkey": "TR",
    "turkiye": "TR",
    "ivory coast": "CI",
    "macedonia": "MK",
    "palestine": "PS",
    "vatican": "VA",
    "vatican city": "VA",
    "cape verde": "CV",
    "swaziland": "SZ",
    "burma": "MM",
    "brunei": "BN",
    "micronesia": "FM",
    "drc": "CD",
    "dr congo": "CD",
    "democratic republic of the congo": "CD",
    "republic of the congo": "CG",
    "east timor": "TL",
    "kosovo": "XK",
    "south korea": "KR",
    "north korea": "KP",
    # What people call their own country.
    "deutschland": "DE",
    "osterreich": "AT",
    "schweiz": "CH",
    "suisse": "CH",
    "svizzera": "CH",
    "espana": "ES",
    "italia": "IT",
    "brasil": "BR",
    "polska": "PL",
    "nederland": "NL",
    "belgie": "BE",
    "belgique": "BE",
    "sverige": "SE",
    "norge": "NO",
    "danmark": "DK",
    "suomi": "FI",
    "eesti": "EE",
    "latvija": "LV",
    "lietuva": "LT",
    "cesko": "CZ",
    "ceska republika": "CZ",
    "slovensko": "SK",
    "magyarorszag": "HU",
    "hrvatska": "HR",
    "srbija": "RS",
    "slovenija": "SI",
    "hellas": "GR",
    "ellada": "GR",
    "eire": "IE",
    "nippon": "JP",
    "nihon": "JP",
    "zhongguo": "CN",
    "rossiya": "RU",
    "ukraina": "UA",
}
# How a few countries are shown back, where ISO's name reads oddly in a chat.
_DISPLAY_NAMES = {
    "CD": "DR Congo",
    "CG": "Republic of the Congo",
    "FM": "Micronesia",
    "PS": "Palestine",
    "VA": "Vatican City",
    "VG": "British Virgin Islands",
    "VI": "US Virgin Islands",
    "XK": "Kosovo",
}

_DEMONYMS = {
    "american": "US",
    "argentine": "AR",
    "argentinian": "AR",
    "australian": "AU",
    "austrian": "AT",
    "belgian": "BE",
    "brazilian": "BR",
    "british": "GB",
    "bulgarian": "BG",
    "canadian": "CA",
    "chilean": "CL",
    "chinese": "CN",
    "colombian": "CO",
    "croatian": "HR",
    "cypriot": "CY",
    "czech": "CZ",
    "danish": "DK",
    "dutch": "NL",
    "egyptian": "EG",
    "emirati": "AE",
    "english": "GB",
    "estonian": "EE",
    "filipino": "PH",
    "finnish": "FI",
    "french": "FR",
    "german": "DE",
    "greek": "GR",
    "hungarian": "HU",
    "icelandic": "IS",
    "indian": "IN",
    "indonesian": "ID",
    "iranian": "IR",
    "irish": "IE",
    "israeli": "IL",
    "italian": "IT",
    "japanese": "JP",
    "latvian": "LV",
    "lebanese": "LB",
    "lithuanian": "LT",
    "luxembourgish": "LU",
    "malaysian": "MY",
    "maltese": "MT",
    "mexican": "MX",
    "moroccan": "MA",
    "new zealander": "NZ",
    "nigerian": "NG",
    "norwegian": "NO",
    "pakistani": "PK",
    "peruvian": "PE",
    "polish": "PL",
    "portuguese": "PT",
    "romanian": "RO",
    "russian": "RU",
    "saudi": "SA",
    "scottish": "GB",
    "serbian": "RS",
    "singaporean": "SG",
    "slovak": "SK",
    "slovenian": "SI",
    "south african": "ZA",
    "south korean": "KR",
    "spanish": "ES",
    "swedish": "SE",
    "swiss": "CH",
    "taiwanese": "TW",
    "thai": "TH",
    "turkish": "TR",
    "ukrainian": "UA",
    "venezuelan": "VE",
    "vietnamese": "VN",
    "welsh": "GB",
}
_AMBIGUOUS = {"korea": ("KR", "KP"), "korean": ("KR", "KP"), "congo": ("CG", "CD")}
_FUZZY_CUTOFF = 85
_SUGGEST_CUTOFF = 70


def _country_key(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c)).casefold()
    plain = plain.replace("&", " and ")
    plain = re.sub(r"[.'’`()]", "", plain)
    plain = " ".join(re.sub(r"[^a-z0-9]+", " ", plain).split())
    return plain.removeprefix("the ")


@cache
def _country_index() -> tuple[dict[str, str], dict[str, str]]:
    """(exact names → alpha-2, codes → alpha-2), built on first use (pycountry reads files)."""
    names: dict[str, str] = {}
    codes: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        codes[country.alpha_2.casefold()] = code
        codes[country.alpha_3.casefold()] = code
        spellings = [country.name]
        spellings += [getattr(country, a, None) or "" for a in ("common_name", "official_name")]
        for spelling in [s for s in spellings if s]:
            names.setdefault(_country_key(spelling), code)
            head, _, tail = spelling.partition(", ")
            if tail:  # "Korea, Republic of" → "Republic of Korea"
                names.setdefault(_country_key(f"{tail} {head}"), code)
            if "(" in spelling:  # "Holy See (Vatican City State)" → "Holy See"
                names.setdefault(_country_key(spelling.partition("(")[0]), code)
    for alias, code in _COUNTRY_ALIASES.items():
        names[_country_key(alias)] = code
    for demonym, code in _DEMONYMS.items():
        names.setdefault(demonym, code)
    return names, codes


def country_label(alpha_2: str) -> str:
    """A country's everyday name for display: 'GB' → 'United Kingdom'."""
    if alpha_2 in _DISPLAY_NAMES:
        return _DISPLAY_NAMES[alpha_2]
    country = pycountry.countries.get(alpha_2=alpha_2)
    if country is None:
        return alpha_2
    return str(getattr(country, "common_name", None) or country.name)


def parse_nationality(text: str) -> str:
    """The passport's issuing country as ISO 3166-1 alpha-2, from a name, code or demonym."""
    field = TravellerField.NATIONALITY
    key = _country_key(text)[:60]
    if not key:
        if text.strip():  # typed in another script: 'Россия'
            raise FieldError(field, "type the country's name in English or its code, e.g. DE")
        raise FieldError(field, "type the country that issued the passport, e.g. Germany or DE")
    names, codes = _country_index()
    if key in _AMBIGUOUS:
        raise _which_country(_AMBIGUOUS[key])
    if key in names:
        return names[key]
    if len(key) in (2, 3) and key in codes:
        return codes[key]
    if len(key) >= 4:
        matches = process.extract(key, list(names), scorer=fuzz.ratio, limit=5)
        best = [(names[name], score) for name, score, _ in matches]
        if best and best[0][1] >= _FUZZY_CUTOFF:
            rivals = tuple(dict.fromkeys(c for c, score in best if score >= best[0][1] - 3))
            if len(rivals) == 1:
                return best[0][0]
            raise _which_country(rivals)
        if best and best[0][1] >= _SUGGEST_CUTOFF:
            raise FieldError(
                field,
                f"no country by that name; did you mean {country_label(best[0][0])}? "
                "Type the name or code, e.g. Germany or DE",
                suggestions=(best[0][0],),
            )
    raise FieldError(field, "no country by that name; type its name or code, e.g. Germany or DE")


def _which_country(codes: tuple[str, ...]) -> FieldError:
    options = " or ".join(country_label(code) for code in codes)
    return FieldError(
        TravellerField.NATIONALITY,
        f"did you mean {options}? Type the full name or the code",
        suggestions=codes,
    )


# --------------------------------------------------------------------------- passport, contact


def parse_passport_number(text: str) -> str:
    """Letters and digits only, spaces removed, capitals: 'x12 345 67' → 'X1234567'."""
    field = TravellerField.PASSPORT_NUMBER
    number = "".join(unicodedata.normalize("NFKC", text).split()).upper()
    if not number:
        raise FieldError(field, "type the number printed on the passport, e.g. X1234567")
    if not (number.isascii() and number.isalnum()):
        raise FieldError(
            field, "use only the letters A–Z and digits printed on the passport, e.g. X1234567"
        )
    if not PASSPORT_MIN <= len(number) <= PASSPORT_MAX:
        raise FieldError(
            field,
            f"passport numbers have {PASSPORT_MIN} to {PASSPORT_MAX} letters and digits; "
            "check it against the passport, e.g. X1234567",
        )
    return number


def parse_email(text: str) -> str:
    """A deliverable-looking address (syntax only, no DNS), domain lower-cased."""
    field = TravellerField.EMAIL
    address = unicodedata.normalize("NFKC", text).strip()
    local, _, domain = address.rpartition("@")
    if not address:
        problem = "type the address for the booking confirmation, e.g. name@example.com"
    elif any(c.isspace() for c in address):
        problem = "an email address has no spaces, e.g. name@example.com"
    elif address.count("@") != 1:
        problem = "an email address has exactly one @, e.g. name@example.com"
    elif not local:
        problem = "something must come before the @, e.g. name@example.com"
    elif not local.isascii():
        problem = "before the @ use only Latin letters, digits and . _ - +, e.g. name@example.com"
    elif "." not in domain.strip("."):
        problem = "the part after the @ needs a dot, e.g. name@example.com"
    else:
        try:
            checked = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError:
            problem = "that address does not look right; check it, e.g. name@example.com"
        else:
            return checked.ascii_email or checked.normalized
    raise FieldError(field, problem)


_SKIP_WORDS = frozenset({"skip", "/skip", "no", "none", "-", "n/a", "na", "no thanks"})


def parse_phone(text: str) -> str | None:
    """An international number as '+' and 7–15 digits, or None when the traveller skips it."""
    field = TravellerField.PHONE
    typed = unicodedata.normalize("NFKC", text).strip()
    if not typed or typed.casefold() in _SKIP_WORDS:
        return None
    number = re.sub(r"[\s().\-/]", "", typed)
    if number.startswith("00"):
        number = "+" + number[2:]
    if not number.startswith("+"):
        raise FieldError(
            field, "start with + and the country code, e.g. +44 20 7946 0958, or type skip"
        )
    digits = number[1:]
    if not (digits.isascii() and digits.isdigit()):
        raise FieldError(field, "use only digits after the +, e.g. +44 20 7946 0958, or type skip")
    if digits.startswith("0") or not PHONE_MIN_DIGITS <= len(digits) <= PHONE_MAX_DIGITS:
        raise FieldError(
            field,
            f"a number with its country code has {PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} "
            "digits, e.g. +44 20 7946 0958, or type skip",
        )
    return "+" + digits


# --------------------------------------------------------------------------- whole traveller


def parse_field(
    field: TravellerField | str,
    text: str,
    *,
    category: PassengerCategory | None = None,
    first_day: date | None = None,
    last_day: date | None = None,
    today: date | None = None,
) -> Any:
    """Check what was typed for ``field`` (a ``TravellerField`` or its value, e.g.
    "birth_date"): the one entry point a data-driven flow needs. Returns str, date, ``Gender``
    or None (a skipped phone)."""
    match TravellerField(field):
        case TravellerField.FIRST_NAME:
            return parse_first_name(text)
        case TravellerField.LAST_NAME:
            return parse_last_name(text)
        case TravellerField.BIRTH_DATE:
            return parse_birth_date(
                text, category=category, first_day=first_day, last_day=last_day, today=today
            )
        case TravellerField.GENDER:
            return parse_gender(text)
        case TravellerField.NATIONALITY:
            return parse_nationality(text)
        case TravellerField.PASSPORT_NUMBER:
            return parse_passport_number(text)
        case TravellerField.PASSPORT_EXPIRY:
            return parse_passport_expiry(text, last_day=last_day, today=today)
        case TravellerField.EMAIL:
            return parse_email(text)
        case TravellerField.PHONE:
            return parse_phone(text)


def _as_text(value: object) -> str:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def build_traveller(
    category: PassengerCategory,
    fields: Mapping[str, object],
    *,
    first_day: date | None = None,
    last_day: date | None = None,
    lead: bool = False,
    today: date | None = None,
) -> Traveller:
    """The ``Traveller`` from collected values (typed text or values parsed earlier, keyed by
    ``TravellerField`` value). Every field is checked again, in asking order, against
    ``category`` and the trip's days when given (pass them: an edit at review is then checked
    against the rest); the first one missing or wrong raises its ``FieldError``. The lead
    traveller must give an email; the phone is optional for everyone."""
    values: dict[str, Any] = {}
    for field in FIELD_ORDER:
        raw = fields.get(field.value)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if field is TravellerField.PHONE or (field is TravellerField.EMAIL and not lead):
                values[field.value] = None
                continue
            raise FieldError(field, f"still needed: {field.hint}")
        values[field.value] = parse_field(
            field,
            _as_text(raw),
            category=category,
            first_day=first_day,
            last_day=last_day,
            today=today,
        )
    try:
        return Traveller(category=category, **values)
    except ValidationError as error:  # every field was checked above; this is a safety net
        problem = error.errors()[0]
        name = str(problem["loc"][0]) if problem["loc"] else ""
        field = next((f for f in FIELD_ORDER if f.value == name), TravellerField.FIRST_NAME)
        raise FieldError(field, f"please type it again: {field.hint}") from None


__all__ = [
    "FIELD_ORDER",
    "LEAD_FIELDS",
    "PERSON_FIELDS",
    "FieldError",
    "TravellerField",
    "age_on",
    "build_traveller",
    "category_for",
    "country_label",
    "date_readings",
    "fields_for",
    "parse_birth_date",
    "parse_email",
    "parse_field",
    "parse_first_name",
    "parse_gender",
    "parse_last_name",
    "parse_nationality",
    "parse_passport_expiry",
    "parse_passport_number",
    "parse_phone",
    "travel_dates",
]
