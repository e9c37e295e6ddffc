"""Traveller details as typed in the chat: what is accepted, how it is normalized, and what the
traveller is told when it is not."""

from __future__ import annotations

import html
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.models import Gender, Itinerary, PassengerCategory, Segment
from services.money import Money
from services.travellers import (
    FIELD_ORDER,
    FieldError,
    TravellerField,
    build_traveller,
    category_for,
    country_label,
    date_readings,
    parse_birth_date,
    parse_email,
    parse_field,
    parse_first_name,
    parse_gender,
    parse_last_name,
    parse_nationality,
    parse_passport_expiry,
    parse_passport_number,
    parse_phone,
    travel_dates,
)

TODAY = date(2027, 3, 1)
# Out on 1 Jun, back on 12 Jun.
FIRST_DAY, LAST_DAY = date(2027, 6, 1), date(2027, 6, 12)


class Trip(TypedDict):
    first_day: date
    last_day: date


TRIP: Trip = {"first_day": FIRST_DAY, "last_day": LAST_DAY}


def refused(field: TravellerField, call: object, *args: object, **kwargs: object) -> FieldError:
    """Run a parser expecting a refusal for ``field``; return the error for further checks."""
    assert callable(call)
    with pytest.raises(FieldError) as caught:
        call(*args, **kwargs)
    error = caught.value
    assert error.field is field
    assert str(error).startswith(f"{field.label}: ")
    assert html.escape(str(error), quote=False) == str(error)  # safe to send as Telegram HTML
    return error


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("maria", "MARIA"),
        ("  Anna   Maria ", "ANNA MARIA"),
        ("José María", "JOSE MARIA"),
        ("Jose\u0301", "JOSE"),  # accent typed as a combining mark
        ("Ñúñez", "NUNEZ"),
        ("Ngọc", "NGOC"),
        ("Müller", "MUELLER"),  # ICAO 9303, as the passport's machine-readable line
        ("Søren", "SOEREN"),
        ("Åsa", "AASA"),
        ("straße", "STRASSE"),
        ("Łukasz", "LUKASZ"),
        ("Þór", "THOR"),
        ("MULLER", "MULLER"),  # whoever's passport says U types U
        ("o’neil", "O'NEIL"),
        ("D' Artagnan", "D'ARTAGNAN"),
        ("Jean - Paul", "JEAN-PAUL"),
        ("Anna–Lena", "ANNA-LENA"),  # en dash from a phone keyboard
        ("ＭＡＲＩＡ", "MARIA"),  # full-width letters
        ("A" * 40, "A" * 40),
    ],
)
def test_names_are_stored_in_passport_capitals(typed: str, stored: str) -> None:
    assert parse_first_name(typed) == stored
    assert parse_last_name(typed) == stored
    assert parse_first_name(stored) == stored  # a stored name reads back unchanged


def test_a_non_latin_name_asks_for_latin_letters() -> None:
    error = refused(TravellerField.FIRST_NAME, parse_first_name, "Мария")
    assert str(error) == "First name: use Latin letters as in your passport (A–Z), e.g. MARIA"
    error = refused(TravellerField.LAST_NAME, parse_last_name, "山田")
    assert "Latin letters" in str(error)
    assert "GARCIA" in str(error)


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "type it as in the passport"),
        ("   ", "type it as in the passport"),
        ("Maria2", "no digits"),
        ("Maria!", "only letters, spaces, hyphens (-) and apostrophes (')"),
        ("<b>Maria</b>", "only letters"),
        ("maria@example.com", "only letters"),
        ("Maria 😀", "only letters"),
        ("-Maria", "between letters"),
        ("Anna--Maria", "between letters"),
        ("O''Neil", "between letters"),
        ("Maria-", "between letters"),
        ("A" * 41, "at most 40"),
    ],
)
def test_names_refused_say_what_to_type(typed: str, says: str) -> None:
    error = refused(TravellerField.FIRST_NAME, parse_first_name, typed)
    assert says in str(error)
    assert "e.g." in str(error)


# --------------------------------------------------------------------------- dates of birth


@pytest.mark.parametrize(
    "typed",
    [
        "1990-05-17",
        "1990/5/17",
        "17.05.1990",
        "17/05/1990",
        "17-05-1990",
        "17 05 1990",
        "17.5.1990",
        "17 May 1990",
        "17 may 1990",
        "17th May 1990",
        "17th of May 1990",
        "May 17, 1990",
        "May 17th 1990",
        "17 May, 1990",
        "17-May-1990",
        "1990 May 17",
        "17051990",
        "19900517",
        "05/17/1990",  # month-first, only because 17 cannot be a month
        " 17.05.1990 ",
    ],
)
def test_date_of_birth_in_the_forms_people_type(typed: str) -> None:
    assert parse_birth_date(typed, today=TODAY) == date(1990, 5, 17)


def test_ambiguous_slashes_are_read_day_first() -> None:
    assert parse_birth_date("05/06/1990", today=TODAY) == date(1990, 6, 5)
    assert parse_birth_date("3 Sept 1990", today=TODAY) == date(1990, 9, 3)
    assert parse_birth_date("sept. 3 1990", today=TODAY) == date(1990, 9, 3)


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "type day, month and year, e.g. 17.05.1990 or 17 May 1990"),
        ("yesterday", "type day, month and year"),
        ("17 Mai 1990", "type day, month and year"),
        ("1990", "type day, month and year"),
        ("17.05", "type day, month and year"),
        ("17.05.1990 10:00", "type day, month and year"),
        ("17 May 90", "type the year in full"),
        ("17.05.90", "type the year in full"),
        ("31.04.1990", "that day does not exist"),
        ("29.02.1991", "that day does not exist"),
        ("17.13.1990", "that day does not exist"),
        ("2" * 5000, "type day, month and year"),
    ],
)
def test_unreadable_dates_of_birth_say_what_to_type(typed: str, says: str) -> None:
    error = refused(TravellerField.BIRTH_DATE, parse_birth_date, typed, today=TODAY)
    assert says in str(error)


def test_a_birth_date_cannot_be_in_the_future_or_absurdly_old() -> None:
    assert parse_birth_date("01.03.2027", today=TODAY) == TODAY  # born today
    error = refused(TravellerField.BIRTH_DATE, parse_birth_date, "02.03.2027", today=TODAY)
    assert "in the future" in str(error)
    error = refused(TravellerField.BIRTH_DATE, parse_birth_date, "01.01.1900", today=TODAY)
    assert "check the year" in str(error)


def test_a_baby_born_today_anywhere_on_earth_is_not_in_the_future() -> None:
    """Without a given date, 'today' is the latest date on Earth (UTC+14)."""
    latest_today = datetime.now(timezone(timedelta(hours=14))).date()
    assert parse_birth_date(latest_today.isoformat()) == latest_today
    tomorrow = latest_today + timedelta(days=1)
    refused(TravellerField.BIRTH_DATE, parse_birth_date, tomorrow.isoformat())


# --------------------------------------------------------------------------- categories


@pytest.mark.parametrize(
    ("born", "flying", "category"),
    [
        (date(2015, 6, 12), date(2027, 6, 11), PassengerCategory.CHILD),  # 11, a day short
        (date(2015, 6, 12), date(2027, 6, 12), PassengerCategory.ADULT),  # 12th birthday
        (date(2025, 6, 12), date(2027, 6, 11), PassengerCategory.INFANT),
        (date(2025, 6, 12), date(2027, 6, 12), PassengerCategory.CHILD),  # 2nd birthday
        (date(2027, 2, 1), date(2027, 6, 12), PassengerCategory.INFANT),
        (date(1950, 1, 1), date(2027, 6, 12), PassengerCategory.ADULT),
        (date(2016, 2, 29), date(2028, 2, 28), PassengerCategory.CHILD),  # leap-day birthday
        (date(2016, 2, 29), date(2028, 2, 29), PassengerCategory.ADULT),
        (date(2015, 2, 28), date(2027, 2, 28), PassengerCategory.ADULT),
        (date(2015, 3, 1), date(2027, 2, 28), PassengerCategory.CHILD),
    ],
)
def test_category_for_counts_full_years_on_the_travel_date(
    born: date, flying: date, category: PassengerCategory
) -> None:
    assert category_for(born, flying) is category


def test_a_child_turning_12_during_the_trip_is_booked_as_an_adult() -> None:
    birthday_mid_trip = "05.06.2015"  # 12 on 5 Jun; the last flight is 12 Jun
    error = refused(
        TravellerField.BIRTH_DATE,
        parse_birth_date,
        birthday_mid_trip,
        category=PassengerCategory.CHILD,
        today=TODAY,
        **TRIP,
    )
    assert "on the last flight (Sat 12 Jun) this traveller" in str(error)
    assert "12 years old" in str(error)
    assert "as an adult (12 or older), not as a child (2 to 11)" in str(error)
    assert "start a new search" in str(error)
    adult = parse_birth_date(
        birthday_mid_trip, category=PassengerCategory.ADULT, today=TODAY, **TRIP
    )
    assert adult == date(2015, 6, 5)
    # Turning 12 the day after the last flight: still a child for the whole trip.
    assert parse_birth_date(
        "13.06.2015", category=PassengerCategory.CHILD, today=TODAY, **TRIP
    ) == date(2015, 6, 13)


def test_an_infant_turning_2_before_the_return_flight_needs_a_child_seat() -> None:
    error = refused(
        TravellerField.BIRTH_DATE,
        parse_birth_date,
        "05.06.2025",
        category=PassengerCategory.INFANT,
        today=TODAY,
        **TRIP,
    )
    assert "2 years old" in str(error)
    assert "as a child (2 to 11), not as an infant" in str(error)
    assert parse_birth_date(
        "05.06.2025", category=PassengerCategory.CHILD, today=TODAY, **TRIP
    ) == date(2025, 6, 5)
    # Two on the day of the return flight itself: a child too.
    refused(
        TravellerField.BIRTH_DATE,
        parse_birth_date,
        "12.06.2025",
        category=PassengerCategory.INFANT,
        today=TODAY,
        **TRIP,
    )
    assert parse_birth_date(
        "13.06.2025", category=PassengerCategory.INFANT, today=TODAY, **TRIP
    ) == date(2025, 6, 13)


def test_an_adult_seat_for_a_child_is_refused() -> None:
    error = refused(
        TravellerField.BIRTH_DATE,
        parse_birth_date,
        "01.01.2020",
        category=PassengerCategory.ADULT,
        today=TODAY,
        **TRIP,
    )
    assert "7 years old" in str(error)
    assert "as a child (2 to 11), not as an adult" in str(error)
    error = refused(
        TravellerField.BIRTH_DATE,
        parse_birth_date,
        "01.01.2027",
        category=PassengerCategory.CHILD,
        today=TODAY,
        **TRIP,
    )
    assert "0 years old" in str(error)
    assert "as an infant (under 2, on a lap)" in str(error)


# --------------------------------------------------------------------------- gender, nationality


@pytest.mark.parametrize(
    ("typed", "gender"),
    [
        ("F", Gender.FEMALE),
        ("f", Gender.FEMALE),
        ("Female", Gender.FEMALE),
        (" FEMALE ", Gender.FEMALE),
        ("woman", Gender.FEMALE),
        ("M", Gender.MALE),
        ("m.", Gender.MALE),
        ("male", Gender.MALE),
        ("Man", Gender.MALE),
    ],
)
def test_gender(typed: str, gender: Gender) -> None:
    assert parse_gender(typed) is gender


@pytest.mark.parametrize("typed", ["", "x", "other", "fem", "mr", "females", "1"])
def test_gender_refused_says_f_or_m(typed: str) -> None:
    error = refused(TravellerField.GENDER, parse_gender, typed)
    assert str(error) == "Gender: type F or M (female or male), as the airline needs it"


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("germany", "DE"),
        ("Germany", "DE"),
        ("DE", "DE"),
        ("de", "DE"),
        ("DEU", "DE"),
        ("Deutschland", "DE"),
        ("German", "DE"),
        ("United Kingdom", "GB"),
        ("UK", "GB"),
        ("U.K.", "GB"),
        ("GBR", "GB"),
        ("Great Britain", "GB"),
        ("British", "GB"),
        ("USA", "US"),
        ("United States of America", "US"),
        ("the Netherlands", "NL"),
        ("Holland", "NL"),
        ("south korea", "KR"),
        ("Republic of Korea", "KR"),
        ("Côte d'Ivoire", "CI"),
        ("cote divoire", "CI"),
        ("Ivory Coast", "CI"),
        ("Türkiye", "TR"),
        ("Turkey", "TR"),
        ("Russia", "RU"),
        ("Vietnam", "VN"),
        ("Czech Republic", "CZ"),
        ("Trinidad & Tobago", "TT"),
        ("holy see", "VA"),
        ("DR Congo", "CD"),
        ("swizerland", "CH"),  # a typo
        ("untied kingdom", "GB"),
        ("portugal", "PT"),
        ("Kosovo", "XK"),
    ],
)
def test_nationality_by_name_code_or_demonym(typed: str, code: str) -> None:
    assert parse_nationality(typed) == code


def test_an_ambiguous_nationality_offers_the_choices() -> None:
    error = refused(TravellerField.NATIONALITY, parse_nationality, "Korea")
    assert "South Korea or North Korea" in str(error)
    assert error.suggestions == ("KR", "KP")
    error = refused(TravellerField.NATIONALITY, parse_nationality, "congo")
    assert set(error.suggestions) == {"CG", "CD"}
    assert "DR Congo" in str(error)


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "type the country that issued the passport, e.g. Germany or DE"),
        ("Atlantis", "no country by that name"),
        ("XX", "no country by that name"),
        ("Россия", "in English or its code"),
        ("x" * 5000, "no country by that name"),
    ],
)
def test_unknown_nationality_says_what_to_type(typed: str, says: str) -> None:
    assert says in str(refused(TravellerField.NATIONALITY, parse_nationality, typed))


def test_a_near_miss_nationality_suggests_the_country() -> None:
    error = refused(TravellerField.NATIONALITY, parse_nationality, "Germna")
    assert "did you mean Germany?" in str(error)
    assert error.suggestions == ("DE",)


def test_country_label_reads_naturally() -> None:
    assert country_label("GB") == "United Kingdom"
    assert country_label("KR") == "South Korea"
    assert country_label("CD") == "DR Congo"
    assert country_label(parse_nationality("Iran")) == "Iran"


# --------------------------------------------------------------------------- passport


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("X1234567", "X1234567"),
        ("x12 345 67", "X1234567"),
        (" c01x00t47 ", "C01X00T47"),
        ("123456789", "123456789"),
        ("ＡＢ１２３４５", "AB12345"),
        ("A1234", "A1234"),
        ("A" * 20, "A" * 20),
    ],
)
def test_passport_numbers_are_letters_and_digits_in_capitals(typed: str, stored: str) -> None:
    assert parse_passport_number(typed) == stored


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "type the number printed on the passport"),
        ("AB-1234567", "only the letters A–Z and digits"),
        ("AB#1234567", "only the letters A–Z and digits"),
        ("ÄB1234567", "only the letters A–Z and digits"),
        ("A123", "5 to 20 letters and digits"),
        ("A" * 21, "5 to 20 letters and digits"),
    ],
)
def test_passport_numbers_refused_are_never_echoed(typed: str, says: str) -> None:
    error = refused(TravellerField.PASSPORT_NUMBER, parse_passport_number, typed)
    assert says in str(error)
    core = typed.replace("-", "").replace("#", "")
    if core:
        assert core not in str(error)
        assert core not in repr(error)
    assert error.__cause__ is None


def test_passport_expiry_must_outlast_the_trip() -> None:
    # Valid through 13 Jun: it still covers an overnight return flight landing that day.
    assert parse_passport_expiry("13.06.2027", last_day=LAST_DAY, today=TODAY) == date(2027, 6, 13)
    for typed in ("11.06.2027", "12.06.2027"):  # the day before the return, the return day
        error = refused(
            TravellerField.PASSPORT_EXPIRY,
            parse_passport_expiry,
            typed,
            last_day=LAST_DAY,
            today=TODAY,
        )
        assert "must still be valid after the last flight (Sat 12 Jun)" in str(error)
        assert "Use another passport" in str(error)


def test_an_expired_or_absurd_passport_expiry_is_refused() -> None:
    error = refused(
        TravellerField.PASSPORT_EXPIRY, parse_passport_expiry, "28.02.2027", today=TODAY
    )
    assert "has expired" in str(error)
    assert parse_passport_expiry("01.03.2027", today=TODAY) == TODAY  # valid through today
    assert parse_passport_expiry("01.03.2037", today=TODAY) == date(2037, 3, 1)
    assert parse_passport_expiry("01.03.2038", today=TODAY) == date(2038, 3, 1)
    error = refused(
        TravellerField.PASSPORT_EXPIRY, parse_passport_expiry, "02.03.2038", today=TODAY
    )
    assert "passports are valid for 10 years at most" in str(error)
    error = refused(TravellerField.PASSPORT_EXPIRY, parse_passport_expiry, "13.06.27", today=TODAY)
    assert "year in full" in str(error)


def test_travel_dates_are_the_local_days_of_the_first_and_last_flights() -> None:
    lisbon, tokyo = timezone(timedelta(hours=1)), timezone(timedelta(hours=9))

    def flight(number: str, dep: datetime, arr: datetime, *, inbound: bool) -> Segment:
        return Segment(
            carrier="TP",
            flight_number=number,
            origin="NRT" if inbound else "LIS",
            destination="LIS" if inbound else "NRT",
            departure=dep,
            arrival=arr,
            inbound=inbound,
        )

    itinerary = Itinerary(
        id="x",
        provider="demo",
        segments=(
            flight(
                "TP1",
                datetime(2027, 6, 1, 10, tzinfo=lisbon),
                datetime(2027, 6, 2, 8, tzinfo=tokyo),
                inbound=False,
            ),
            flight(
                "TP2",
                datetime(2027, 6, 12, 23, 30, tzinfo=tokyo),
                datetime(2027, 6, 13, 6, tzinfo=lisbon),
                inbound=True,
            ),
        ),
        price=Money(amount=120000, currency="EUR"),
    )
    assert travel_dates(itinerary) == (FIRST_DAY, LAST_DAY)


# --------------------------------------------------------------------------- contact


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("maria@example.com", "maria@example.com"),
        (" Maria.Garcia@Example.COM ", "Maria.Garcia@example.com"),
        ("maria+trip@mail.example.co.uk", "maria+trip@mail.example.co.uk"),
    ],
)
def test_email(typed: str, stored: str) -> None:
    assert parse_email(typed) == stored


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "type the address for the booking confirmation"),
        ("maria.garcia", "exactly one @"),
        ("maria@@example.com", "exactly one @"),
        ("maria garcia@example.com", "no spaces"),
        ("@example.com", "something must come before the @"),
        ("maria.garcia@example", "needs a dot"),
        ("maria.garcia@localhost", "needs a dot"),
        ("zoë.garcia@example.com", "only Latin letters"),
        ("maria.garcia@example.test", "does not look right"),
        ("maria..garcia@example.com", "does not look right"),
        ("Maria <maria.garcia@example.com>", "no spaces"),
    ],
)
def test_emails_refused_are_never_echoed(typed: str, says: str) -> None:
    error = refused(TravellerField.EMAIL, parse_email, typed)
    assert says in str(error)
    if typed:
        assert "garcia" not in str(error).lower()
        assert "garcia" not in repr(error).lower()
    assert error.__cause__ is None
    assert error.__context__ is None  # no validator message riding along in a traceback


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 (20) 7946-0958", "+442079460958"),
        ("+1 555.123.4567", "+15551234567"),
        ("+3519123456", "+3519123456"),
        ("skip", None),
        ("Skip", None),
        ("no", None),
        ("", None),
    ],
)
def test_phone_is_optional_and_international(typed: str, stored: str | None) -> None:
    assert parse_phone(typed) == stored


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("0912 345 678", "start with + and the country code"),
        ("+351 912 345 67x", "only digits after the +"),
        ("+123456", "7 to 15 digits"),
        ("+1234567890123456", "7 to 15 digits"),
        ("+0207946095", "7 to 15 digits"),
    ],
)
def test_phones_refused_are_never_echoed(typed: str, says: str) -> None:
    error = refused(TravellerField.PHONE, parse_phone, typed)
    assert says in str(error)
    assert "or type skip" in str(error)
    digits = "".join(c for c in typed if c.isdigit())
    assert digits not in str(error).replace(" ", "")


# --------------------------------------------------------------------------- a whole traveller

TYPED = {
    "first_name": "María José",
    "last_name": "García-López",
    "birth_date": "17 May 1990",
    "gender": "female",
    "nationality": "spain",
    "passport_number": "pa 123 4567",
    "passport_expiry": "01.01.2031",
    "email": "maria@example.com",
    "phone": "skip",
}


def test_build_traveller_from_what_was_typed() -> None:
    traveller = build_traveller(PassengerCategory.ADULT, TYPED, lead=True, today=TODAY, **TRIP)
    assert traveller.full_name == "MARIA JOSE GARCIA-LOPEZ"
    assert traveller.birth_date == date(1990, 5, 17)
    assert traveller.gender is Gender.FEMALE
    assert traveller.nationality == "ES"
    assert traveller.passport_number == "PA1234567"
    assert traveller.passport_masked == "•••• 4567"
    assert traveller.passport_expiry == date(2031, 1, 1)
    assert traveller.email == "maria@example.com"
    assert traveller.phone is None
    assert traveller.category is PassengerCategory.ADULT
    shown = repr(traveller) + str(traveller)
    assert "PA1234567" not in shown
    assert "maria@example.com" not in shown


def test_build_traveller_from_values_already_parsed() -> None:
    """What a flow stores (normalized values, dates as ISO) builds the same traveller."""
    first = build_traveller(PassengerCategory.ADULT, TYPED, lead=True, today=TODAY, **TRIP)
    stored = first.model_dump(mode="json", exclude={"category", "passport_masked"})
    again = build_traveller(PassengerCategory.ADULT, stored, lead=True, today=TODAY, **TRIP)
    assert again == first
    as_objects = first.model_dump(exclude={"category", "passport_masked"})
    assert (
        build_traveller(PassengerCategory.ADULT, as_objects, lead=True, today=TODAY, **TRIP)
        == first
    )


def test_email_is_needed_only_from_the_lead_traveller() -> None:
    without_email = {k: v for k, v in TYPED.items() if k not in ("email", "phone")}
    error = refused(
        TravellerField.EMAIL,
        build_traveller,
        PassengerCategory.ADULT,
        without_email,
        lead=True,
        today=TODAY,
        **TRIP,
    )
    assert "still needed" in str(error)
    companion = build_traveller(PassengerCategory.ADULT, without_email, today=TODAY, **TRIP)
    assert companion.email is None
    assert companion.phone is None


def test_the_first_field_in_error_is_the_one_reported() -> None:
    collected = dict(TYPED, first_name="Мария", passport_number="#")
    error = refused(
        TravellerField.FIRST_NAME,
        build_traveller,
        PassengerCategory.ADULT,
        collected,
        today=TODAY,
        **TRIP,
    )
    assert "Latin letters" in str(error)
    missing = {k: v for k, v in TYPED.items() if k != "passport_number"}
    error = refused(
        TravellerField.PASSPORT_NUMBER,
        build_traveller,
        PassengerCategory.ADULT,
        missing,
        today=TODAY,
        **TRIP,
    )
    assert "still needed" in str(error)
    blank = dict(TYPED, last_name="   ")
    error = refused(
        TravellerField.LAST_NAME, build_traveller, PassengerCategory.ADULT, blank, today=TODAY
    )
    assert "still needed" in str(error)


def test_an_edit_at_review_is_checked_against_the_rest() -> None:
    """Changing the birth date to a child's on an adult seat is caught, naming that field;
    putting it right builds the traveller with every other field as it was."""
    edited = dict(TYPED, birth_date="01.01.2020")
    error = refused(
        TravellerField.BIRTH_DATE,
        build_traveller,
        PassengerCategory.ADULT,
        edited,
        today=TODAY,
        **TRIP,
    )
    assert "child" in str(error)
    fixed = build_traveller(
        PassengerCategory.ADULT, dict(edited, birth_date="02.01.1989"), today=TODAY, **TRIP
    )
    assert fixed.birth_date == date(1989, 1, 2)
    assert fixed.passport_number == "PA1234567"
    # The same details on a trip returning after the passport expires (1 Jan 2031).
    refused(
        TravellerField.PASSPORT_EXPIRY,
        build_traveller,
        PassengerCategory.ADULT,
        TYPED,
        first_day=date(2030, 12, 20),
        last_day=date(2031, 1, 1),
        today=TODAY,
    )


def test_every_field_has_a_label_and_a_hint_for_its_question() -> None:
    assert [f.value for f in FIELD_ORDER][:2] == ["first_name", "last_name"]
    for field in FIELD_ORDER:
        assert field.label
        assert "e.g." in field.hint or field is TravellerField.GENDER


@settings(max_examples=150, deadline=None, database=None)
@given(field=st.sampled_from(FIELD_ORDER), typed=st.text(max_size=300))
def test_any_text_in_any_field_is_accepted_or_explained(field: TravellerField, typed: str) -> None:
    """Bad input never crashes: a value, or a FieldError for that field and nothing else."""
    error: FieldError | None = None
    try:
        value = parse_field(field, typed, category=PassengerCategory.ADULT, today=TODAY, **TRIP)
    except FieldError as caught:
        error = caught
    if error is not None:
        assert error.field is field
        assert str(error).startswith(field.label + ": ")
        assert html.escape(str(error), quote=False) == str(error)
    elif field in (TravellerField.FIRST_NAME, TravellerField.LAST_NAME):
        assert parse_field(field, value) == value  # stored names read back unchanged


@settings(database=None)
@given(
    born=st.dates(min_value=date(1910, 1, 1), max_value=TODAY),
    flying=st.dates(min_value=TODAY, max_value=date(2030, 12, 31)),
)
def test_a_date_of_birth_fits_exactly_the_category_it_falls_in(born: date, flying: date) -> None:
    category = category_for(born, flying)
    typed = born.strftime("%d.%m.%Y")
    for booked in PassengerCategory:
        if booked is category:
            assert parse_birth_date(typed, category=booked, last_day=flying, today=TODAY) == born
        else:
            refused(
                TravellerField.BIRTH_DATE,
                parse_birth_date,
                typed,
                category=booked,
                last_day=flying,
                today=TODAY,
            )


def test_fields_can_be_named_by_their_string_values() -> None:
    assert parse_field("gender", "f") is Gender.FEMALE
    assert parse_field("passport_expiry", "2031-01-01", last_day=LAST_DAY, today=TODAY) == date(
        2031, 1, 1
    )


def test_today_default_is_not_fixed_at_import() -> None:
    """Without ``today`` the checks use the real current date, not one frozen at import."""
    next_year = datetime.now(UTC).date().year + 1
    assert parse_passport_expiry(f"01.01.{next_year + 1}") == date(next_year + 1, 1, 1)


@pytest.mark.parametrize(
    ("typed", "readings"),
    [
        ("12/08/1988", (date(1988, 8, 12), date(1988, 12, 8))),
        ("03.04.1990", (date(1990, 4, 3), date(1990, 3, 4))),
        ("17.05.1990", None),  # 17 is only a day
        ("05/05/1990", None),
        ("1990-05-06", None),
        ("12/08/88", None),  # a short year is refused anyway
    ],
)
def test_a_birth_date_whose_day_and_month_could_swap_has_two_readings(
    typed: str, readings: tuple[date, date] | None
) -> None:
    assert date_readings(typed) == readings
