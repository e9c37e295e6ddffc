"""Settings: a bad or missing value stops start-up with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import FlightProvider, SettingsError, load_settings
from services.storage.sealing import new_key

ALL_SETTINGS = [
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_BASE_URL",
    "TELEGRAM_WEBHOOK_URL",
    "TELEGRAM_WEBHOOK_SECRET",
    "ADMIN_USER_IDS",
    "REDIS_URL",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "DATA_ENCRYPTION_KEYS",
    "SQLITE_PATH",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "PUBLIC_BASE_URL",
    "FLIGHT_PROVIDER",
    "KIWI_API_KEY",
    "KIWI_BASE_URL",
    "PROVIDER_TEST_MODE",
    "RETENTION_DENIED_AUDIT_DAYS",
    "RETENTION_PAYMENT_EVENTS_DAYS",
    "RETENTION_SEARCHES_DAYS",
    "KIWI_DEPOSIT_EMAIL",
    "KIWI_WEBHOOK_SECRET",
    "DUFFEL_ACCESS_TOKEN",
    "DUFFEL_BASE_URL",
    "DUFFEL_WEBHOOK_SECRET",
    "DEFAULT_CURRENCY",
    "PORT",
    "MAX_ALERTS_PER_USER",
    "ALERT_SEARCHES_PER_RUN",
    "ALERT_CHECK_INTERVAL_MINUTES",
]

ROOT = Path(__file__).resolve().parent.parent
KEY_NEW = new_key()
KEY_OLD = new_key()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer .env or exported setting leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    for name in [*ALL_SETTINGS, "DATABASE_URL", "CONVERSATION_TTL", "LOG_LEVEL"]:
        monkeypatch.delenv(name, raising=False)


def test_nothing_set_means_embedded_defaults() -> None:
    settings = load_settings()
    assert not settings.uses_supabase
    assert not settings.uses_redis
    assert not settings.uses_stripe
    assert settings.flight_provider is FlightProvider.DEMO
    assert settings.default_currency == "EUR"
    assert settings.port == 8080
    assert settings.base_url == "http://127.0.0.1:8080"


def test_jobs_go_to_the_redis_queue_with_redis_unless_told_to_stay_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("JOB_QUEUE_BACKEND", "JOB_QUEUE_NAME", "REDIS_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    assert not load_settings().jobs_on_redis  # nothing set: this process runs them
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("REDIS_PREFIX", "bot2")
    monkeypatch.setenv("JOB_QUEUE_BACKEND", "")  # as copied from .env.example: choose
    on_redis = load_settings()
    assert on_redis.jobs_on_redis
    assert on_redis.jobs_queue == "bot2:jobs"  # two bots on one Redis keep their own queues
    monkeypatch.setenv("JOB_QUEUE_BACKEND", "embedded")
    assert not load_settings().jobs_on_redis
    monkeypatch.setenv("JOB_QUEUE_NAME", "bad name")
    with pytest.raises(SettingsError, match="JOB_QUEUE_NAME"):
        load_settings()
    monkeypatch.delenv("JOB_QUEUE_NAME")
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("JOB_QUEUE_BACKEND", "arq")
    with pytest.raises(SettingsError, match="REDIS_URL"):
        load_settings()


def test_setting_services_switches_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-key")
    monkeypatch.setenv("DATA_ENCRYPTION_KEYS", f"{KEY_NEW}, {KEY_OLD}")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_123")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_123")
    monkeypatch.setenv("ADMIN_USER_IDS", "11, 22;33")
    settings = load_settings()
    assert settings.uses_redis
    assert settings.uses_supabase
    assert settings.uses_stripe
    assert settings.admin_user_ids == frozenset({11, 22, 33})
    assert settings.stripe_secret_key is not None
    assert "sk_test_123" not in repr(settings)  # secrets never printed
    assert settings.encryption_keys == [KEY_NEW, KEY_OLD]  # newest first: it encrypts
    assert KEY_NEW not in repr(settings)


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DEFAULT_CURRENCY=gbp\nPORT=9090\n")
    settings = load_settings()
    assert settings.default_currency == "GBP"
    assert settings.port == 9090


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PORT": "eighty"}, "PORT: "),
        ({"PORT": "70000"}, "PORT: "),
        ({"ADMIN_USER_IDS": "12,abc"}, "ADMIN_USER_IDS: expected comma-separated numeric"),
        ({"TELEGRAM_BOT_TOKEN": "not-a-token"}, "TELEGRAM_BOT_TOKEN: expected a bot token"),
        ({"TELEGRAM_WEBHOOK_SECRET": "has spaces!"}, "TELEGRAM_WEBHOOK_SECRET: expected 1-256"),
        (
            {"TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram/webhook"},
            "TELEGRAM_WEBHOOK_SECRET: required when TELEGRAM_WEBHOOK_URL is set",
        ),
        ({"TELEGRAM_API_BASE_URL": "ftp://x"}, "TELEGRAM_API_BASE_URL: "),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL: expected a URL starting with redis://"),
        ({"SUPABASE_URL": "not a url"}, "SUPABASE_URL: "),
        (
            {"SUPABASE_URL": "https://p.supabase.co"},
            "SUPABASE_SERVICE_ROLE_KEY: required when SUPABASE_URL is set",
        ),
        (
            {"SUPABASE_URL": "https://p.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "service"},
            "DATA_ENCRYPTION_KEYS: required when SUPABASE_URL is set",
        ),
        (
            {"DATA_ENCRYPTION_KEYS": "my-secret-passphrase"},
            "DATA_ENCRYPTION_KEYS: expected comma-separated keys",
        ),
        (
            {"DATA_ENCRYPTION_KEYS": "5aKsaQnDUg7cnwhpC8yzLTdUz8HZoUVeZn5Rh2rAbuY=,short"},
            "DATA_ENCRYPTION_KEYS: expected comma-separated keys",
        ),
        (
            {"STRIPE_SECRET_KEY": "sk_test_1"},
            "STRIPE_WEBHOOK_SECRET: required when STRIPE_SECRET_KEY is set",
        ),
        ({"STRIPE_API_BASE": "nope"}, "STRIPE_API_BASE: "),
        ({"PUBLIC_BASE_URL": "bot.example.com"}, "PUBLIC_BASE_URL: "),
        ({"FLIGHT_PROVIDER": "skyscanner"}, "FLIGHT_PROVIDER: "),
        ({"FLIGHT_PROVIDER": "kiwi"}, "KIWI_API_KEY: required when FLIGHT_PROVIDER=kiwi"),
        ({"KIWI_BASE_URL": "::"}, "KIWI_BASE_URL: "),
        (
            {"FLIGHT_PROVIDER": "duffel"},
            "DUFFEL_ACCESS_TOKEN: required when FLIGHT_PROVIDER=duffel",
        ),
        ({"DUFFEL_BASE_URL": "nope"}, "DUFFEL_BASE_URL: "),
        ({"DEFAULT_CURRENCY": "EURO"}, "DEFAULT_CURRENCY: expected an ISO 4217 currency"),
        ({"CONVERSATION_TTL": "5"}, "CONVERSATION_TTL: "),
    ],
)
def test_each_bad_value_names_its_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(expected)
    assert "\n" not in message
    for value in env.values():
        if len(value) > 6:
            assert value not in message or value in expected  # input is not echoed back


def test_a_real_provider_with_the_sandbox_checkout_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sandbox checkout's Pay button takes no money: with Kiwi it would buy a real ticket."""
    monkeypatch.setenv("FLIGHT_PROVIDER", "kiwi")
    monkeypatch.setenv("KIWI_API_KEY", "live-kiwi-key")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("STRIPE_SECRET_KEY: required when FLIGHT_PROVIDER=kiwi issues real")
    assert "PROVIDER_TEST_MODE=true" in message
    assert "\n" not in message
    assert "live-kiwi-key" not in message

    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_1")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_1")
    assert load_settings().issues_real_tickets  # real money, real tickets: allowed


def test_a_providers_test_mode_may_use_the_sandbox_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLIGHT_PROVIDER", "kiwi")
    monkeypatch.setenv("KIWI_API_KEY", "kiwi-test-key")
    monkeypatch.setenv("PROVIDER_TEST_MODE", "true")
    settings = load_settings()
    assert not settings.issues_real_tickets
    assert not settings.uses_stripe
    monkeypatch.setenv("PROVIDER_TEST_MODE", "false")
    with pytest.raises(SettingsError):
        load_settings()


def test_demo_fares_never_issue_real_tickets() -> None:
    assert not load_settings().issues_real_tickets


def test_cli_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ALL_SETTINGS}
    env["PORT"] = "-1"
    run = subprocess.run(
        [sys.executable, "-m", "bot", "doctor"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert lines == [lines[0]]
    assert lines[0].startswith("travelbot: setting error: PORT: ")
    assert "Traceback" not in run.stderr


def test_webhook_with_kiwi_and_no_stripe_does_not_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ALL_SETTINGS}
    env.update(
        FLIGHT_PROVIDER="kiwi",
        KIWI_API_KEY="live-kiwi-key",
        TELEGRAM_BOT_TOKEN="424242:SANDBOX-test-token-not-a-secret",
        TELEGRAM_WEBHOOK_URL="https://bot.example.com/telegram/webhook",
        TELEGRAM_WEBHOOK_SECRET="s3cret",
        PYTHONPATH=str(ROOT),
    )
    run = subprocess.run(
        [sys.executable, "-m", "bot", "webhook"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [run.stderr.strip().splitlines()[0]], run.stderr
    assert run.stderr.startswith("travelbot: setting error: STRIPE_SECRET_KEY: required when")
    assert "Traceback" not in run.stderr


def test_env_example_lists_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    for name in ALL_SETTINGS:
        assert f"\n{name}=" in example, name


_REAL_PAYMENTS = {"STRIPE_SECRET_KEY": "sk_test_1", "STRIPE_WEBHOOK_SECRET": "whsec_1"}


@pytest.mark.parametrize(
    ("env", "test_mode"),
    [
        ({}, True),  # demo fares issue no ticket
        ({"FLIGHT_PROVIDER": "duffel", "DUFFEL_ACCESS_TOKEN": "duffel_test_abc"}, True),
        (
            {"FLIGHT_PROVIDER": "duffel", "DUFFEL_ACCESS_TOKEN": "duffel_live_abc"}
            | _REAL_PAYMENTS,
            False,
        ),
        # Kiwi has no test mode of its own
        ({"FLIGHT_PROVIDER": "kiwi", "KIWI_API_KEY": "k"} | _REAL_PAYMENTS, False),
    ],
)
def test_the_providers_own_test_mode_is_known(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], test_mode: bool
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.issues_real_tickets is not test_mode
    if env.get("FLIGHT_PROVIDER") == "duffel":
        assert settings.flight_provider is FlightProvider.DUFFEL
