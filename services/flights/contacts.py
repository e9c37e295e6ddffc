"""Contact details as airlines take them."""

from __future__ import annotations

import phonenumbers


def e164(phone: str | None) -> str | None:
    """A phone number as E.164 (+ and 8 to 15 digits), checked with ``phonenumbers``; None when
    there is none or it is not a possible number."""
    if not phone:
        return None
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return formatted if 8 <= len(formatted) - 1 <= 15 else None
