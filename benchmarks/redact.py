"""What cleaning log records of personal data costs (bot/logs.py, services/redact.py).

Per log record, through a real logger and handler at INFO: with no protection, with the
cleaning record factory knowing no values, and knowing 20,000 values (the redactor's limit);
and the cost of sealing plus opening one traveller, which also remembers its values.

    uv run python -m benchmarks.redact
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from services.redact import LIMIT, Redactor
from services.storage.sealing import Sealer, new_key

LINES = (
    ("short", "booking %s awaiting payment (%s)", ("GKCCWM", "€427.00")),
    ("traceback", "ticketing failed for %s", ("GKCCWM",)),
)
ROUNDS = 20_000


def _per_call(call: Callable[[], object], rounds: int = ROUNDS) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(rounds):
            call()
        best = min(best, (time.perf_counter() - started) / rounds)
    return best * 1e6


def _logger() -> logging.Logger:
    logger = logging.getLogger("benchmark.redact")
    logger.handlers[:] = [logging.StreamHandler(io.StringIO())]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def _failure() -> BaseException:
    def fail() -> None:
        raise RuntimeError("provider refused passenger: invalid document")

    try:
        fail()
    except RuntimeError as error:
        return error
    raise AssertionError("unreachable")


def _logging(
    logger: logging.Logger, message: str, args: tuple[str, ...], exc: BaseException | None
) -> Callable[[], None]:
    return lambda: logger.info(message, *args, exc_info=exc)


def main() -> None:
    from bot.logs import clean_record

    logger = _logger()
    failure = _failure()
    plain_factory = logging.getLogRecordFactory()
    empty, full = Redactor(), Redactor()
    full.remember(f"VALUE{n:06d}" for n in range(LIMIT))

    def factory_with(redactor: Redactor) -> Callable[..., logging.LogRecord]:
        def make(*args: object, **kwargs: object) -> logging.LogRecord:
            record = plain_factory(*args, **kwargs)
            clean_record(record, redactor)
            return record

        return make

    print(f"{'log record':<12} {'unprotected':>12} {'no values':>12} {LIMIT:>7,} values")
    for label, message, args in LINES:
        exc = failure if label == "traceback" else None
        figures = []
        for factory in (plain_factory, factory_with(empty), factory_with(full)):
            logging.setLogRecordFactory(factory)
            figures.append(_per_call(_logging(logger, message, args, exc), ROUNDS // 4))
        logging.setLogRecordFactory(plain_factory)
        print(f"{label:<12} " + " ".join(f"{f:>9.1f} µs" for f in figures))

    sealer = Sealer([new_key()])
    traveller = {
        "category": "adult",
        "first_name": "QUITERIA",
        "last_name": "VASCONCELOS",
        "birth_date": "1987-11-23",
        "gender": "F",
        "nationality": "PT",
        "passport_number": "XK7654321",
        "passport_expiry": "2033-04-29",
        "email": "quiteria.v@example.org",
        "phone": "+351934567812",
    }
    stored = sealer.seal(traveller)
    print(f"seal one traveller: {_per_call(lambda: sealer.seal(traveller), 5000):.1f} µs")
    print(f"open one traveller: {_per_call(lambda: sealer.open(stored), 5000):.1f} µs")


if __name__ == "__main__":
    main()
