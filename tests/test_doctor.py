"""``travelbot doctor`` catching what a first deploy gets wrong: an IPv6-only database host, and
a Stripe webhook endpoint that is missing, disabled or not subscribed to the bot's events."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence

import pytest
import stripe

from bot.doctor import Check, check_database_url, check_webhook_endpoints, stripe_webhook_endpoints
from services.payments.events import SUBSCRIBED_EVENTS
from tests.standins.stripe import StripeStandin
from tests.test_cli import _run

DIRECT = "postgresql://postgres:secret@db.abcdefghijklmnop.supabase.co:5432/postgres"
V6 = "2600:1f18:2e13:9d00::1"  # documentation-style; never contacted


def dns(*records: tuple[int, str]):  # type: ignore[no-untyped-def]
    """A resolver answering for every name with these records (DNS as it would answer)."""

    async def resolve(host: str, port: int) -> Sequence[tuple[int, str]]:
        return records

    return resolve


async def test_an_ipv6_only_database_host_without_an_ipv6_route_points_to_the_pooler() -> None:
    check = await check_database_url(
        DIRECT, resolve=dns((socket.AF_INET6, V6)), route=lambda address, port: False
    )
    assert not check.ok
    assert "IPv6-only" in check.summary
    assert "db.abcdefghijklmnop.supabase.co" in check.summary
    assert check.advice is not None
    assert "session pooler" in check.advice
    assert "pooler.supabase.com:5432" in check.advice
    assert "secret" not in check.summary + check.advice  # the password is never printed


async def test_an_ipv6_only_host_with_a_route_passes_with_a_warning() -> None:
    check = await check_database_url(
        DIRECT, resolve=dns((socket.AF_INET6, V6)), route=lambda address, port: True
    )
    assert check.ok
    assert check.advice is not None
    assert "session pooler" in check.advice


async def test_ipv4_hosts_and_the_transaction_pooler() -> None:
    pooler = "postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com"
    both = dns((socket.AF_INET6, V6), (socket.AF_INET, "52.0.0.1"))
    assert (await check_database_url(f"{pooler}:5432/postgres", resolve=both)).ok
    transaction = await check_database_url(f"{pooler}:6543/postgres", resolve=both)
    assert not transaction.ok
    assert transaction.advice is not None
    assert "5432" in transaction.advice


async def test_the_real_resolver_and_route_probe_on_loopback() -> None:
    assert (await check_database_url("postgresql://postgres@127.0.0.1:5432/postgres")).ok
    # [::1] has only an IPv6 address, and this host routes to it: the probe runs for real.
    only_v6 = await check_database_url("postgresql://postgres@[::1]:5432/postgres")
    assert only_v6.ok, only_v6
    assert "IPv6-only" in only_v6.summary
    missing = await check_database_url("postgresql://postgres@no-such-host.invalid:5432/x")
    assert not missing.ok
    assert "does not resolve" in missing.summary


@pytest.fixture
async def stripe_api() -> AsyncIterator[StripeStandin]:
    async with StripeStandin() as standin:
        yield standin


def _stripe_env(stripe_api: StripeStandin) -> dict[str, str]:
    return {
        "STRIPE_SECRET_KEY": stripe_api.api_key,
        "STRIPE_WEBHOOK_SECRET": stripe_api.webhook_secret,
        "STRIPE_API_BASE": stripe_api.base_url,
        "PUBLIC_BASE_URL": "https://bot.example.com",
    }


async def _doctor(stripe_api: StripeStandin, tmp_path: object) -> tuple[int, str]:
    return await _run(
        "doctor",
        cwd=tmp_path,  # type: ignore[arg-type]
        DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres",
        **_stripe_env(stripe_api),
    )


def _line(out: str, port: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(port))


async def test_doctor_checks_the_stripe_endpoints_events(
    stripe_api: StripeStandin, tmp_path: object
) -> None:
    stripe_api.add_webhook_endpoint("https://other.example.com/hook", ["*"])
    partial = [event for event in SUBSCRIBED_EVENTS if event != "charge.refunded"]
    stripe_api.add_webhook_endpoint("https://bot.example.com/stripe/webhook", partial)
    code, out = await _doctor(stripe_api, tmp_path)
    assert code == 1
    assert "does not send charge.refunded" in _line(out, "stripe")
    assert "checkout.session.completed" in out  # the advice lists what to subscribe to
    assert "has IPv4 addresses" in _line(out, "database")

    for endpoint in stripe_api.webhook_endpoints.values():
        endpoint["enabled_events"] = list(SUBSCRIBED_EVENTS)
    code, out = await _doctor(stripe_api, tmp_path)
    assert code == 0, out
    assert "sends every event the bot needs" in _line(out, "stripe")
    assert stripe_api.api_key not in out


async def _endpoint_check(stripe_api: StripeStandin, key: str | None = None) -> Check:
    endpoints = await stripe_webhook_endpoints(key or stripe_api.api_key, stripe_api.base_url)
    return check_webhook_endpoints(endpoints, "https://bot.example.com/")


async def test_a_missing_or_disabled_endpoint_fails(stripe_api: StripeStandin) -> None:
    missing = await _endpoint_check(stripe_api)
    assert not missing.ok
    assert "no Stripe webhook endpoint for https://bot.example.com/stripe/webhook" in (
        missing.summary
    )
    stripe_api.add_webhook_endpoint(
        "https://bot.example.com/stripe/webhook", ["*"], status="disabled"
    )
    disabled = await _endpoint_check(stripe_api)
    assert not disabled.ok
    assert "is disabled" in disabled.summary
    with pytest.raises(stripe.AuthenticationError):
        await _endpoint_check(stripe_api, key="sk_test_revoked")


async def test_every_endpoint_is_read_across_pages(stripe_api: StripeStandin) -> None:
    urls = [f"https://bot{n}.example.com/stripe/webhook" for n in range(105)]
    for url in urls:
        stripe_api.add_webhook_endpoint(url, ["*"])
    found = await stripe_webhook_endpoints(stripe_api.api_key, stripe_api.base_url)
    assert sorted(endpoint["url"] for endpoint in found) == sorted(urls)
    pages = [r for r in stripe_api.requests if r.path == "/v1/webhook_endpoints"]
    assert len(pages) == 2
