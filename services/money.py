"""Money as integer minor units with an ISO 4217 currency: floats never touch a price."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import pycountry
from pydantic import BaseModel, ConfigDict, field_validator

# ISO 4217 exponents that are not 2. Stripe's zero-decimal list is a superset of ISO's 0-exponent
# currencies for the ones we may charge in; ISK is two-decimal at Stripe but whole in practice.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "MGA",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    "CLF": 4,
    "UYW": 4,
}

_SYMBOLS: dict[str, str] = {
    "EUR": "€",
    "USD": "$",
    "GBP": "£",
    "JPY": "¥",
    "INR": "₹",
    "KRW": "₩",
    "ILS": "₪",
    "TRY": "₺",
    "UAH": "₴",
    "NGN": "₦",
    "VND": "₫",
    "PHP": "₱",
    "THB": "฿",
}


class CurrencyMismatchError(ValueError):
    """Raised when arithmetic or comparison mixes two currencies."""


def currency_exponent(currency: str) -> int:
    """Number of decimal places of the currency's minor unit."""
    return _EXPONENTS.get(currency.upper(), 2)


def is_currency(code: str) -> bool:
    return len(code) == 3 and pycountry.currencies.get(alpha_3=code.upper()) is not None


class Money(BaseModel):
    """An amount in minor units (cents, yen) of one currency."""

    model_config = ConfigDict(frozen=True)

    amount: int
    currency: str

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        code = value.strip().upper()
        if not is_currency(code):
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return code

    @field_validator("amount", mode="before")
    @classmethod
    def _whole_minor_units(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            # pydantic turns ValueError (not TypeError) into a validation error.
            raise ValueError("amount must be a whole number of minor units")  # noqa: TRY004
        return value

    @classmethod
    def from_decimal(cls, value: Decimal | str | int | float, currency: str) -> Money:
        """Convert a major-unit amount (as a provider quotes it) to minor units, rounding half up.

        Floats are accepted only through their shortest decimal repr, so 41.1 becomes 4110.
        """
        try:
            major = Decimal(str(value))
        except InvalidOperation as exc:
            raise ValueError(f"{value!r} is not an amount") from exc
        if not major.is_finite():
            raise ValueError(f"{value!r} is not an amount")
        exponent = currency_exponent(currency)
        minor = (major * (Decimal(10) ** exponent)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        return cls(amount=int(minor), currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(amount=0, currency=currency)

    @property
    def exponent(self) -> int:
        return currency_exponent(self.currency)

    @property
    def major(self) -> Decimal:
        """The amount in major units, exact."""
        return Decimal(self.amount).scaleb(-self.exponent)

    def _check(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"cannot combine {self.currency} with {other.currency}")
        return other

    def __add__(self, other: object) -> Money:
        return Money(amount=self.amount + self._check(other).amount, currency=self.currency)

    def __sub__(self, other: object) -> Money:
        return Money(amount=self.amount - self._check(other).amount, currency=self.currency)

    def __mul__(self, factor: int) -> Money:
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise TypeError("Money can only be multiplied by a whole number")
        return Money(amount=self.amount * factor, currency=self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: object) -> bool:
        return self.amount < self._check(other).amount

    def __le__(self, other: object) -> bool:
        return self.amount <= self._check(other).amount

    def __gt__(self, other: object) -> bool:
        return self.amount > self._check(other).amount

    def __ge__(self, other: object) -> bool:
        return self.amount >= self._check(other).amount

    def format(self) -> str:
        """Display form with symbol or code and the currency's own decimals: €89.00, ¥12,000."""
        digits = f"{abs(self.major):,.{self.exponent}f}"
        sign = "-" if self.amount < 0 else ""
        symbol = _SYMBOLS.get(self.currency)
        if symbol:
            return f"{sign}{symbol}{digits}"
        return f"{sign}{self.currency} {digits}"

    def __str__(self) -> str:
        return self.format()


def sum_money(amounts: list[Money], currency: str) -> Money:
    """Sum a list of amounts; an empty list is zero in ``currency``."""
    total = Money.zero(currency)
    for amount in amounts:
        total = total + amount
    return total
