"""What the log cleaner hides and what it leaves alone (services/redact.py)."""

from __future__ import annotations

from datetime import date

from services.redact import REDACTED, Redactor

# What operators need from logs, which must come out unchanged.
OPERATIONAL = (
    "booking GKCCWM awaiting payment (€427.00) for user 123456789 on 2026-12-02 14:33:05",
    "event evt_1QxZ (checkout.session.completed) for booking 6f1c2a4e-9b7d-4c55-8e8e-2b1f0c3d4e5f",
    "flight TP1234 LIS-FCO departs 2027-03-20T10:30:00+00:00; 2 travellers; port 8080",
    "Kiwi rejected the request (HTTP 422): invalid booking token",
)


def test_operational_lines_are_left_alone() -> None:
    redactor = Redactor()
    redactor.remember(["QUITERIA", "XK7654321", date(1987, 11, 23), "+351934567812"])
    for line in OPERATIONAL:
        assert redactor.clean(line) == line


def test_emails_and_international_phone_numbers_are_hidden_by_shape() -> None:
    redactor = Redactor()
    text = "contact ana.silva+trip@mail.example.co.uk, +351 912 345 678, 0044 20 7946 0958"
    assert redactor.clean(text) == "contact <email>, <phone>, <phone>"


def test_values_handled_before_are_hidden_in_any_case_and_date_form() -> None:
    redactor = Redactor()
    redactor.remember_traveller(
        {
            "first_name": "Quiteria",
            "last_name": "Vasconcelos Sá",
            "birth_date": "1987-11-23",
            "passport_number": "XK7654321",
            "gender": "F",
            "nationality": "PT",
        }
    )
    cleaned = redactor.clean(
        "refused QUITERIA vasconcelos (PT, F) born 23.11.1987 / 1987-11-23, doc xk7654321."
    )
    assert cleaned == (
        f"refused {REDACTED} {REDACTED} (PT, F) born {REDACTED} / {REDACTED}, doc {REDACTED}."
    )


def test_it_remembers_at_most_its_limit_the_oldest_forgotten_first() -> None:
    redactor = Redactor(limit=3)
    redactor.remember(["AAAA1111", "BBBB2222", "CCCC3333"])
    redactor.remember(["AAAA1111"])  # seen again: now the newest
    redactor.remember(["DDDD4444"])
    assert len(redactor) == 3
    assert redactor.clean("AAAA1111 BBBB2222 CCCC3333 DDDD4444") == (
        f"{REDACTED} BBBB2222 {REDACTED} {REDACTED}"
    )
