"""Settings, read once from the environment or ``.env``.

Which adapter each port uses follows from what is set (ARCHITECTURE.md): nothing set means the
embedded defaults (sandbox Telegram, demo fares, sandbox checkout, SQLite, in-process state).
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.money import is_currency

_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_REDIS_PREFIX = re.compile(r"^[A-Za-z0-9_:-]{1,64}$")


class FlightProvider(enum.StrEnum):
    DEMO = "demo"
    KIWI = "kiwi"


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

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: AnyHttpUrl | None = None
    public_base_url: AnyHttpUrl | None = None

    flight_provider: FlightProvider = FlightProvider.DEMO
    kiwi_api_key: SecretStr | None = None
    kiwi_base_url: AnyHttpUrl = AnyHttpUrl("https://api.tequila.kiwi.com")

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

    @field_validator("redis_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if not _REDIS_PREFIX.match(value):
            raise ValueError("expected 1-64 characters of A-Z, a-z, 0-9, _, - and :")
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
        if self.stripe_secret_key and not self.stripe_webhook_secret:
            raise _MissingError("stripe_webhook_secret", "required when STRIPE_SECRET_KEY is set")
        if self.flight_provider is FlightProvider.KIWI and not self.kiwi_api_key:
            raise _MissingError("kiwi_api_key", "required when FLIGHT_PROVIDER=kiwi")
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
    def uses_stripe(self) -> bool:
        return self.stripe_secret_key is not None

    @property
    def base_url(self) -> str:
        """Where the bot's own web server is reachable from a traveller's browser."""
        if self.public_base_url is not None:
            return str(self.public_base_url).rstrip("/")
        return f"http://127.0.0.1:{self.port}"


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
