"""Deploy checks of ``travelbot doctor`` beyond 'does each port answer': the mistakes a first
deploy makes that the adapters cannot see themselves.

- ``DATABASE_URL``: Supabase's direct host (``db.<ref>.supabase.co``) has only IPv6 addresses,
  and many hosts (Heroku, Render, Railway, GitHub Actions) have no IPv6 route: ``travelbot
  migrate`` then fails with a bare "network unreachable". The fix is the session pooler URL.
- Stripe: the webhook endpoint at ``PUBLIC_BASE_URL/stripe/webhook`` exists, is enabled and
  subscribes to every event the bot needs (``services.payments.events.SUBSCRIBED_EVENTS``).

The resolver and the IPv6 route probe are parameters, so tests can answer for DNS without the
internet.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from services.payments.events import SUBSCRIBED_EVENTS

Resolver = Callable[[str, int], Awaitable[Sequence[tuple[int, str]]]]
RouteProbe = Callable[[str, int], bool]

POOLER_ADVICE = (
    "use the session pooler connection string instead (Supabase dashboard > Connect > "
    "Session pooler: postgresql://postgres.<project-ref>:<password>@"
    "aws-0-<region>.pooler.supabase.com:5432/postgres), which has IPv4 addresses"
)
WEBHOOK_PATH = "/stripe/webhook"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report: ``ok`` false makes the doctor exit 1."""

    ok: bool
    summary: str
    advice: str | None = None


async def system_resolve(host: str, port: int) -> list[tuple[int, str]]:
    """(address family, address) of each address ``host`` resolves to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(int(family), str(sockaddr[0])) for family, _, _, _, sockaddr in infos]


def ipv6_route(address: str, port: int) -> bool:
    """Whether this host has a route to ``address``: a UDP 'connect' picks one and sends
    nothing, so no packet leaves the machine."""
    probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        probe.connect((address, port))
    except OSError as error:
        if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
            return False
        raise
    finally:
        probe.close()
    return True


async def check_database_url(
    dsn: str, *, resolve: Resolver = system_resolve, route: RouteProbe = ipv6_route
) -> Check:
    """Can this host reach the database ``travelbot migrate`` connects to?"""
    try:
        parts = urlsplit(dsn)
        host, port = parts.hostname, parts.port or 5432
    except ValueError:
        return Check(False, "DATABASE_URL is not a postgresql:// URL")
    if not host:
        return Check(False, "DATABASE_URL has no host")
    if host.endswith(".pooler.supabase.com") and port == 6543:
        return Check(
            False,
            f"{host}:6543 is Supabase's transaction pooler",
            "migrations need a session: use the session pooler, port 5432",
        )
    try:
        addresses = await asyncio.wait_for(resolve(host, port), timeout=10)
    except (OSError, TimeoutError) as error:
        return Check(False, f"{host} does not resolve ({type(error).__name__}: {error})")
    if any(family == socket.AF_INET for family, _ in addresses):
        return Check(True, f"{host} has IPv4 addresses")
    ipv6 = [address for family, address in addresses if family == socket.AF_INET6]
    if not ipv6:
        return Check(False, f"{host} resolves to no IPv4 or IPv6 address")
    try:
        reachable = route(ipv6[0], port)
    except OSError:
        reachable = False
    if reachable:
        return Check(
            True,
            f"{host} is IPv6-only; this host has an IPv6 route",
            "a host without IPv6 (most platforms) would need the session pooler URL",
        )
    return Check(False, f"{host} is IPv6-only and this host has no IPv6 route", POOLER_ADVICE)


def check_webhook_endpoints(
    endpoints: Sequence[dict[str, Any]], public_base_url: str | None
) -> Check:
    """Is there an enabled endpoint for our URL that subscribes to every event we handle?"""
    wanted = f"{public_base_url.rstrip('/')}{WEBHOOK_PATH}" if public_base_url else None
    ours = [
        endpoint
        for endpoint in endpoints
        if (
            endpoint.get("url") == wanted
            if wanted
            else endpoint.get("url", "").endswith(WEBHOOK_PATH)
        )
    ]
    needed = ", ".join(SUBSCRIBED_EVENTS)
    if not ours:
        where = wanted or f"https://<your host>{WEBHOOK_PATH}"
        return Check(
            False,
            f"no Stripe webhook endpoint for {where}",
            f"add one in the Stripe dashboard (Developers > Webhooks) with the events {needed}",
        )
    problems = []
    for endpoint in ours:
        events = set(endpoint.get("enabled_events") or ())
        missing = [] if "*" in events else [e for e in SUBSCRIBED_EVENTS if e not in events]
        if endpoint.get("status") != "enabled":
            problems.append(f"{endpoint.get('id')} is {endpoint.get('status')}")
        if missing:
            problems.append(f"{endpoint.get('id')} does not send {', '.join(missing)}")
    if problems:
        return Check(
            False,
            "; ".join(problems),
            f"the endpoint must be enabled and subscribe to {needed}",
        )
    return Check(True, f"webhook endpoint {ours[0].get('url')} sends every event the bot needs")


async def stripe_webhook_endpoints(secret_key: str, api_base: str | None) -> list[dict[str, Any]]:
    """Every webhook endpoint of the account (``GET /v1/webhook_endpoints``, all pages)."""
    import stripe

    http = stripe.AIOHTTPClient(timeout=15)
    client = stripe.StripeClient(
        secret_key,
        base_addresses={"api": api_base.rstrip("/")} if api_base else None,
        http_client=http,
    )
    found: list[dict[str, Any]] = []
    try:
        page = await client.v1.webhook_endpoints.list_async({"limit": 100})
        while True:
            found.extend(endpoint.to_dict() for endpoint in page.data)
            if not page.has_more or not page.data:
                break
            page = await client.v1.webhook_endpoints.list_async(
                {"limit": 100, "starting_after": page.data[-1].id}
            )
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
    return found
