"""Money and the domain rules every layer relies on."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from pydantic import ValidationError

from services.models import (
    TRANSITIONS,
    BookingStatus,
    IllegalTransitionError,
    Location,
    LocationKind,
    Passengers,
    SearchQuery,
    Traveller,
    check_transition,
    today_anywhere,
)
from services.money import CurrencyMismatchError, Money, currency_exponent, sum_money


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (1999, "EUR", "€19.99"),
        (8900, "eur", "€89.00"),
        (12000, "JPY", "¥12,000"),
        (123456789, "USD", "$1,234,567.89"),
        (1250, "CHF", "CHF 12.50"),
        (12345, "KWD", "KWD 12.345"),
        (-500, "GBP", "-£5.00"),
        (0, "ISK", "ISK 0"),
    ],
)
def test_money_is_shown_with_the_currencys_own_decimals(
    amount: int, currency: str, shown: str
) -> None:
    assert Money(amount=amount, currency=currency).format() == shown


def test_exponents_follow_iso_4217() -> None:
    assert currency_exponent("EUR") == 2
    assert currency_exponent("JPY") == 0
    assert currency_exponent("KRW") == 0
    assert currency_exponent("BHD") == 3


@pytest.mark.parametrize(
    ("major", "currency", "minor"),
    [("19.99", "EUR", 1999), (41.1, "EUR", 4110), ("0.005", "USD", 1), (1234, "JPY", 1234)],
)
def test_major_amounts_convert_exactly(major: str | float, currency: str, minor: int) -> None:
    assert Money.from_decimal(major, currency).amount == minor


@pytest.mark.parametrize("bad", [19.99, "19", True, None])
def test_amount_must_be_whole_minor_units(bad: object) -> None:
    with pytest.raises(ValidationError):
        Money(amount=bad, currency="EUR")


@pytest.mark.parametrize("bad", ["EURO", "XYZ", "", "€"])
def test_currency_must_be_iso_4217(bad: str) -> None:
    with pytest.raises(ValidationError):
        Money(amount=1, currency=bad)


@pytest.mark.parametrize("bad", ["NaN", "inf", "twelve"])
def test_from_decimal_refuses_what_is_not_an_amount(bad: str) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        Money.from_decimal(bad, "EUR")


def test_arithmetic_keeps_the_currency_and_refuses_to_mix() -> None:
    a = Money(amount=1999, currency="EUR")
    assert a + a == Money(amount=3998, currency="EUR")
    assert a * 3 == Money(amount=5997, currency="EUR")
    assert a - a == Money.zero("EUR")
    assert a > Money(amount=1, currency="EUR")
    assert sum_money([a, a, a], "EUR").amount == 5997
    with pytest.raises(CurrencyMismatchError):
        _ = a + Money(amount=1, currency="USD")
    with pytest.raises(CurrencyMismatchError):
        _ = a < Money(amount=1, currency="USD")
    with pytest.raises(TypeError):
        _ = a * 1.5  # type: ignore[operator]


def test_money_survives_json_exactly() -> None:
    money = Money(amount=1999, currency="EUR")
    assert Money.model_validate_json(money.model_dump_json()) == money


# --- search rules ---------------------------------------------------------------------------

LIS = Location(
    code="LIS", name="Lisbon", kind=LocationKind.AIRPORT, country="PT", airports=("LIS",)
)
TYO = Location(
    code="TYO", name="Tokyo", kind=LocationKind.CITY, country="JP", airports=("NRT", "HND")
)


def test_passenger_rules() -> None:
    assert Passengers(adults=2, children=3, infants=2).total == 7
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Passengers(adults=0)
    with pytest.raises(ValidationError, match="no more infants than adults"):
        Passengers(adults=1, infants=2)
    with pytest.raises(ValidationError, match="at most 9"):
        Passengers(adults=5, children=5)
    assert Passengers(adults=1, children=2, infants=1).describe() == "1 adult, 2 children, 1 infant"


def test_search_dates_refuse_the_past_and_a_return_before_departure() -> None:
    soon = today_anywhere() + timedelta(days=10)
    assert SearchQuery(origin=LIS, destination=TYO, departure=soon).is_return is False
    with pytest.raises(ValidationError, match="already passed"):
        SearchQuery(origin=LIS, destination=TYO, departure=today_anywhere() - timedelta(days=1))
    with pytest.raises(ValidationError, match="before the departure"):
        SearchQuery(
            origin=LIS, destination=TYO, departure=soon, return_date=soon - timedelta(days=1)
        )
    with pytest.raises(ValidationError, match="same place"):
        SearchQuery(origin=LIS, destination=LIS, departure=soon)


def test_equal_searches_share_one_cache_key() -> None:
    soon = today_anywhere() + timedelta(days=10)
    shuffled = TYO.model_copy(update={"airports": ("HND", "NRT")})
    a = SearchQuery(origin=LIS, destination=TYO, departure=soon)
    b = SearchQuery(origin=LIS, destination=shuffled, departure=soon)
    c = SearchQuery(origin=LIS, destination=TYO, departure=soon, passengers=Passengers(adults=2))
    assert a.cache_key() == b.cache_key()
    assert a.cache_key() != c.cache_key()


# --- bookings ---------------------------------------------------------------------------------


def test_status_moves_follow_the_architecture() -> None:
    allowed = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert allowed == {
        ("draft", "awaiting_payment"),
        ("draft", "cancelled"),
        ("awaiting_payment", "paid"),
        ("awaiting_payment", "expired"),
        ("awaiting_payment", "cancelled"),  # the traveller gave up before paying
        ("expired", "paid"),
        ("expired", "cancelled"),
        ("paid", "confirmed"),
        ("paid", "failed"),
        ("failed", "refunded"),
        ("confirmed", "cancelled"),
        ("cancelled", "refunded"),
    }
    check_transition(BookingStatus.EXPIRED, BookingStatus.PAID)  # money taken wins
    with pytest.raises(IllegalTransitionError):
        check_transition(BookingStatus.REFUNDED, BookingStatus.CONFIRMED)
    with pytest.raises(IllegalTransitionError):
        check_transition(BookingStatus.AWAITING_PAYMENT, BookingStatus.CONFIRMED)


def test_a_traveller_never_shows_documents_or_contacts_in_repr() -> None:
    traveller = Traveller(
        category="adult",
        first_name="MARIA",
        last_name="SILVA",
        birth_date=date(1990, 5, 17),
        gender="F",
        nationality="PT",
        passport_number="CA1234567",
        passport_expiry=date(2031, 8, 20),
        email="maria@example.com",
        phone="+351912345678",
    )
    text = repr(traveller) + str(traveller)
    assert "CA1234567" not in text
    assert "maria@example.com" not in text
    assert "+351912345678" not in text
    assert traveller.passport_masked == "•••• 4567"
