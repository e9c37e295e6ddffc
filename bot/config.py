"""Settings, read once from the environment or ``.env``.

Which adapter each port uses follows from what is set (ARCHITECTURE.md): nothing set means the
embedded defaults (sandbox Telegram, demo fares, sandbox checkout, SQLite, in-process state).
"""

from __future__ import annotations

import enum
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
    validate_email,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.mail.smtp import SmtpServer
from services.money import is_currency
from services.retention import RetentionPolicy
from services.storage.sealing import check_key

_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_REDIS_PREFIX = re.compile(r"^[A-Za-z0-9_:-]{1,64}$")


class FlightProvider(enum.StrEnum):
    DEMO = "demo"
    KIWI = "kiwi"
    DUFFEL = "duffel"


# Duffel's test-mode tokens: orders at the test airline, paid from an unlimited test balance.
DUFFEL_TEST_TOKEN_PREFIX = "duffel_test_"  # noqa: S105 - a prefix, not a secret


class FareIncreaseAction(enum.StrEnum):
    REFUND = "refund"
    ASK_ADMIN = "ask_admin"


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line naming it."""


class Settings(BaseSettings):
    """Every setting the bot reads. Names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    telegram_bot_token: SecretStr | None = None
    telegram_api_base_url: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org")
    telegram_webhook_url: AnyHttpUrl | None = None
    telegram_webhook_secret: SecretStr | None = None
    admin_user_ids: Annotated[frozenset[int], NoDecode] = frozenset()

    redis_url: str | None = None
    # Every Redis key starts with this: several bots (or test runs) can share one server.
    redis_prefix: str = "tb"
    supabase_url: AnyHttpUrl | None = None
    supabase_service_role_key: SecretStr | None = None
    sqlite_path: Path = Path("data/travelbot.sqlite3")
    database_url: SecretStr | None = None  # Postgres connection string, for `travelbot migrate`
    # Keys for travellers' documents and contacts, comma-separated, newest first (the first
    # encrypts, all decrypt). Required with Supabase; SQLite without it uses a key file.
    data_encryption_keys: SecretStr | None = None

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: AnyHttpUrl | None = None
    public_base_url: AnyHttpUrl | None = None

    flight_provider: FlightProvider = FlightProvider.DEMO
    kiwi_api_key: SecretStr | None = None
    kiwi_base_url: AnyHttpUrl = AnyHttpUrl("https://api.tequila.kiwi.com")
    # The provider's key is a test key (its own sandbox issues no real tickets): only then may a
    # real provider run with the sandbox checkout, which takes no money.
    provider_test_mode: bool = False

    # Confirmation emails: over SMTP when SMTP_URL is set, else written as .eml files into
    # EMAIL_OUTBOX_DIR (default: an "outbox" folder beside the SQLite file).
    smtp_url: SecretStr | None = None
    email_from: str | None = None
    email_outbox_dir: Path | None = None

    # Deposit partners: the deposit account's email, which Kiwi wants on the booking.
    kiwi_deposit_email: str | None = None
    # Kiwi does not sign its booking-status notices: their URL carries this secret instead.
    kiwi_webhook_secret: SecretStr | None = None
    duffel_access_token: SecretStr | None = None
    duffel_base_url: AnyHttpUrl = AnyHttpUrl("https://api.duffel.com")
    duffel_webhook_secret: SecretStr | None = None

    default_currency: str = "EUR"
    port: int = Field(default=8080, ge=1, le=65535)

    conversation_ttl: int = Field(default=24 * 3600, ge=60)
    payment_window_minutes: int = Field(default=30, ge=30, le=24 * 60)
    log_level: str = "INFO"
    # text (human) or json (one object per line, for a platform's log search)
    log_format: Literal["text", "json"] = "text"
    # Sentry project DSN: unhandled errors are reported there (needs the `sentry` extra).
    sentry_dsn: SecretStr | None = None
    # When set, GET /metrics wants "Authorization: Bearer <this>" (the server is public).
    metrics_token: SecretStr | None = None

    # Retention (services/retention.py): days before old rows of the tables that only grow go.
    # The ledger outlives Stripe's retries (3 days) and dashboard resends (30); searches outlive
    # the longest /stats period (30 days).
    retention_denied_audit_days: int = Field(default=30, ge=1)
    retention_payment_events_days: int = Field(default=90, ge=31)
    retention_searches_days: int = Field(default=90, ge=31)
    # Payment reconciliation (services/bookings.py: BookingService.reconcile).
    # How often the scheduled jobs (bot/jobs.py) tick: expiry, reconciliation, erasure,
    # broadcasts' adoption. Once per tick across all workers.
    sweep_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    # A paid booking nobody has ticketed for this long is taken over by reconciliation; also
    # the ticketing lease a worker renews while the provider works.
    reconcile_after_seconds: float = Field(default=180.0, gt=0, le=24 * 3600)
    # How far (percent) the provider's final total may exceed what was paid and still be
    # bought (we absorb the difference); above it, FARE_INCREASE_ACTION.
    fare_increase_tolerance_percent: Decimal = Field(default=Decimal(0), ge=0, le=100)
    fare_increase_action: FareIncreaseAction = FareIncreaseAction.REFUND
    # Price alerts (services/alerts.py): how many a traveller may keep, the provider searches
    # one run of the alert check may make (cached searches are free), and how long an alert
    # waits between two checks of its route.
    max_alerts_per_user: int = Field(default=5, ge=1, le=100)
    alert_searches_per_run: int = Field(default=20, ge=1, le=10_000)
    alert_check_interval_minutes: int = Field(default=180, ge=5, le=7 * 24 * 60)

    # Background jobs (services/jobs): "embedded" runs them in this process on timers; "arq"
    # enqueues them on Redis for `travelbot worker`. Unset: arq when REDIS_URL is set.
    job_queue_backend: Literal["embedded", "arq"] | None = None
    # The arq queue's Redis key; unset, "<REDIS_PREFIX>:jobs" (bots sharing a Redis stay apart).
    job_queue_name: str | None = None
    # Longest a job may run on a worker; a worker killed mid-job has it run again by another
    # once this (plus a margin of up to 10 s) has passed.
    job_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)

    @field_validator("admin_user_ids", mode="before")
    @classmethod
    def _parse_admin_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            items = [item.strip() for item in value.replace(";", ",").split(",")]
            try:
                return frozenset(int(item) for item in items if item)
            except ValueError:
                raise ValueError(
                    "expected comma-separated numeric Telegram user ids, e.g. 12345,67890"
                ) from None
        return value

    @field_validator("telegram_bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TOKEN.match(value.get_secret_value()):
            raise ValueError("expected a bot token like 123456:ABC-DEF... from @BotFather")
        return value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _WEBHOOK_SECRET.match(value.get_secret_value()):
            raise ValueError("expected 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a URL starting with redis://, rediss:// or unix://")
        return value or None

    @field_validator("job_queue_backend", mode="before")
    @classmethod
    def _backend_unset(cls, value: Any) -> Any:
        return value or None  # JOB_QUEUE_BACKEND= (as in .env.example) means "choose"

    @field_validator("job_queue_name")
    @classmethod
    def _queue_shape(cls, value: str | None) -> str | None:
        if value and not _REDIS_PREFIX.match(value):
            raise ValueError("expected 1-64 characters of A-Z, a-z, 0-9, _, - and :")
        return value or None

    @field_validator("redis_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if not _REDIS_PREFIX.match(value):
            raise ValueError("expected 1-64 characters of A-Z, a-z, 0-9, _, - and :")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        SmtpServer.from_url(value.get_secret_value())  # ValueError says what is wrong
        return value

    @field_validator("email_from")
    @classmethod
    def _email_from_shape(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            validate_email(value)
        except ValueError:
            raise ValueError(
                "expected an address such as bookings@example.com or "
                "'Travel Bot <bookings@example.com>'"
            ) from None
        return value

    @field_validator("data_encryption_keys")
    @classmethod
    def _keys_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        try:
            for key in _split_keys(value):
                check_key(key)
        except ValueError:
            raise ValueError(
                "expected comma-separated keys of 44 characters; make one with 'travelbot newkey'"
            ) from None
        return value

    @field_validator("default_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not is_currency(value):
            raise ValueError("expected an ISO 4217 currency code such as EUR")
        return value.upper()

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        # Each pair is reported under the name of the setting that is missing.
        if self.supabase_url and not self.supabase_service_role_key:
            raise _MissingError("supabase_service_role_key", "required when SUPABASE_URL is set")
        if self.supabase_url and not self.data_encryption_keys:
            raise _MissingError(
                "data_encryption_keys",
                "required when SUPABASE_URL is set (make one with 'travelbot newkey')",
            )
        if self.stripe_secret_key and not self.stripe_webhook_secret:
            raise _MissingError("stripe_webhook_secret", "required when STRIPE_SECRET_KEY is set")
        if self.flight_provider is FlightProvider.KIWI and not self.kiwi_api_key:
            raise _MissingError("kiwi_api_key", "required when FLIGHT_PROVIDER=kiwi")
        if self.flight_provider is FlightProvider.DUFFEL and not self.duffel_access_token:
            raise _MissingError(
                "duffel_access_token",
                "required when FLIGHT_PROVIDER=duffel (a duffel_test_ token "
                "from the Duffel dashboard in test mode)",
            )
        if self.issues_real_tickets and not self.uses_stripe:
            raise _MissingError(
                "stripe_secret_key",
                f"required when FLIGHT_PROVIDER={self.flight_provider.value} issues real tickets "
                "(the sandbox checkout takes no money); set PROVIDER_TEST_MODE=true only with "
                "the provider's test key",
            )
        if self.smtp_url and not self.email_from:
            raise _MissingError("email_from", "required when SMTP_URL is set")
        if self.job_queue_backend == "arq" and not self.redis_url:
            raise _MissingError("redis_url", "required when JOB_QUEUE_BACKEND=arq")
        if self.telegram_webhook_url and not self.telegram_webhook_secret:
            raise _MissingError(
                "telegram_webhook_secret", "required when TELEGRAM_WEBHOOK_URL is set"
            )
        return self

    # adapter choice ---------------------------------------------------------------------------
    @property
    def uses_supabase(self) -> bool:
        return self.supabase_url is not None

    @property
    def uses_redis(self) -> bool:
        return self.redis_url is not None

    @property
    def jobs_on_redis(self) -> bool:
        """Whether background jobs go to the arq queue (run by `travelbot worker`)."""
        if self.job_queue_backend is None:
            return self.redis_url is not None
        return self.job_queue_backend == "arq"

    @property
    def jobs_queue(self) -> str:
        return self.job_queue_name or f"{self.redis_prefix}:jobs"

    @property
    def uses_stripe(self) -> bool:
        return self.stripe_secret_key is not None

    @property
    def issues_real_tickets(self) -> bool:
        """Whether a paid booking buys a real ticket: the one rule that decides if payments
        must be real (no ticket for money the sandbox checkout never took).

        The demo provider never does; Duffel does not with a ``duffel_test_`` token (its own
        test mode); any other real one does unless ``PROVIDER_TEST_MODE`` says its key is the
        provider's test key (Kiwi's keys do not tell)."""
        if self.flight_provider is FlightProvider.DEMO or self.provider_test_mode:
            return False
        if self.flight_provider is FlightProvider.DUFFEL:
            token = self.duffel_access_token
            return token is None or not token.get_secret_value().startswith(
                DUFFEL_TEST_TOKEN_PREFIX
            )
        return True

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(
            denied_audit=timedelta(days=self.retention_denied_audit_days),
            payment_events=timedelta(days=self.retention_payment_events_days),
            searches=timedelta(days=self.retention_searches_days),
        )

    @property
    def uses_smtp(self) -> bool:
        return self.smtp_url is not None

    @property
    def email_sender_address(self) -> str:
        """EMAIL_FROM, or a placeholder for the .eml files of the embedded default."""
        return self.email_from or "travelbot <bookings@localhost>"

    @property
    def outbox_dir(self) -> Path:
        """Where the embedded default writes emails: beside the bot's other local data."""
        return self.email_outbox_dir or self.sqlite_path.parent / "outbox"

    @property
    def encryption_keys(self) -> list[str]:
        """``DATA_ENCRYPTION_KEYS`` as a list, newest first (empty when unset)."""
        return _split_keys(self.data_encryption_keys) if self.data_encryption_keys else []

    @property
    def base_url(self) -> str:
        """Where the bot's own web server is reachable from a traveller's browser."""
        if self.public_base_url is not None:
            return str(self.public_base_url).rstrip("/")
        return f"http://127.0.0.1:{self.port}"


def _split_keys(value: SecretStr) -> list[str]:
    return [key.strip() for key in value.get_secret_value().split(",") if key.strip()]


class _MissingError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "settings"
    message = str(first["msg"]).removeprefix("Value error, ")
    ctx_error = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _MissingError):
        field = ctx_error.field
    if first["type"] == "missing":
        message = "is required but not set"
    return f"{field.upper()}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; raise ``SettingsError`` with one line naming the bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
