"""The bot's aiohttp server: Telegram webhook, Stripe webhook, sandbox checkout, health."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from typing import Any

from aiohttp import web
from telegram import Update

from bot.bootstrap import UPDATES_IN_FLIGHT, Runtime
from bot.web_guard import (
    BODY_READ_TIMEOUT,
    BODY_TIMEOUT,
    TELEGRAM_MAX_BYTES,
    GateFullError,
    RequestRefusedError,
    UpdateGate,
    parse_update,
    read_body,
)
from bot.web_payments import add_payment_routes
from bot.web_providers import add_provider_routes
from handlers.telegram import WEBHOOK_REPLY, WebhookReply
from services import metrics
from services.messages import esc

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)
IN_FLIGHT = web.AppKey("in_flight", set)
UPDATE_GATE = web.AppKey("update_gate", UpdateGate)

MAX_UPDATE_BYTES = TELEGRAM_MAX_BYTES


async def telegram_webhook(request: web.Request) -> web.Response:
    """Check the secret in constant time, then handle the update before answering.

    Answering after the update is handled keeps one chat's updates in order even when Telegram
    (or the sandbox) spreads them over several workers; the per-chat lock does the rest. The
    answer may carry one Bot API call for Telegram to make (``handlers.telegram.WebhookReply``).
    """
    runtime = request.app[RUNTIME]
    expected = runtime.settings.telegram_webhook_secret
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if expected is None or not secrets.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        return web.Response(status=403, text="forbidden")
    try:
        payload = parse_update(await read_body(request, limit=MAX_UPDATE_BYTES))
        update = Update.de_json(payload, runtime.application.bot)
    except RequestRefusedError as refused:
        return refused.response()
    except Exception:  # noqa: BLE001 - PTB's de_json raises anything for a malformed update
        log.warning("a webhook update PTB could not read was refused")
        return web.Response(status=400, text="not an update")
    try:
        async with request.app[UPDATE_GATE].slot():
            reply = await _process(request, runtime, update)
    except GateFullError:
        # Telegram delivers a refused update again later.
        log.warning("too many updates in flight; one was refused for Telegram to redeliver")
        return web.Response(status=503, text="busy", headers={"Retry-After": "1"})
    if reply.method is not None:
        return web.json_response(reply.method)
    return web.Response(text="ok")


async def _process(request: web.Request, runtime: Runtime, update: Update) -> WebhookReply:
    task = asyncio.current_task()
    in_flight: set[Any] = request.app[IN_FLIGHT]
    in_flight.add(task)
    reply = WebhookReply()
    token = WEBHOOK_REPLY.set(reply)
    try:
        await runtime.application.process_update(update)
    finally:
        WEBHOOK_REPLY.reset(token)
        in_flight.discard(task)
    return reply


async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 whenever the process is up and its event loop answers.

    It asks no dependency on purpose. Platforms restart a worker whose liveness probe fails, and
    a Redis or database blip is not cured by a restart: the worker already rides it out (the
    traveller is told to try again) and recovers by itself. Readiness is ``/readyz``."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: each port's adapter and whether it answers; 503 while one does not.

    For a load balancer or a deploy gate (send traffic here once it is ready), never for
    restarts: that is ``/healthz``."""
    runtime = request.app[RUNTIME]
    checks = await check_ports(runtime)
    healthy = all(item["ok"] for item in checks.values())
    return web.json_response(
        {"status": "ok" if healthy else "degraded", "ports": checks},
        status=200 if healthy else 503,
    )


async def check_ports(runtime: Runtime) -> dict[str, dict[str, Any]]:
    adapters = runtime.adapters
    names = adapters.describe()
    results: dict[str, dict[str, Any]] = {}

    async def probe(port: str, check: Any) -> None:
        try:
            await asyncio.wait_for(check(), timeout=3)
            results[port] = {"adapter": names[port], "ok": True}
        except Exception as error:  # noqa: BLE001 - a health probe reports, it never raises
            results[port] = {"adapter": names[port], "ok": False, "error": type(error).__name__}

    async def no_check() -> None:
        return None

    await asyncio.gather(
        probe("storage", adapters.storage.ping),
        probe("state", adapters.state.ping),
        probe("cache", getattr(adapters.cache, "ping", no_check)),
        probe("flights", no_check),
        probe("payments", no_check),
    )
    return dict(sorted(results.items()))


async def metrics_page(request: web.Request) -> web.Response:
    """This worker's counters in Prometheus' text format; no personal data (services.metrics).
    With ``METRICS_TOKEN`` set, only a scraper that sends it as a bearer token is answered."""
    token = request.app[RUNTIME].settings.metrics_token
    if token is not None:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
            return web.Response(
                status=401, text="unauthorized", headers={"WWW-Authenticate": "Bearer"}
            )
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def checkout_done(request: web.Request) -> web.Response:
    reference = request.match_info["reference"]
    body = (
        "<!doctype html><meta charset=utf-8><title>Back to the chat</title>"
        "<body style='font-family:sans-serif;max-width:32em;margin:3em auto'>"
        f"<h1>Booking {esc(reference)}</h1><p>You can close this page and return to the chat: "
        "the bot will confirm your booking there.</p></body>"
    )
    return web.Response(text=body, content_type="text/html")


def init_app(
    runtime: Runtime,
    *,
    telegram_webhook_route: bool,
    body_read_timeout: float = BODY_READ_TIMEOUT,
) -> web.Application:
    """The web application; tests reuse it with their own runtime."""
    app = web.Application(client_max_size=MAX_UPDATE_BYTES)
    app[RUNTIME] = runtime
    app[IN_FLIGHT] = set()
    app[UPDATE_GATE] = UpdateGate(UPDATES_IN_FLIGHT)
    app[BODY_TIMEOUT] = body_read_timeout
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/checkout/done/{reference}", checkout_done)
    if telegram_webhook_route:
        app.router.add_post("/telegram/webhook", telegram_webhook)
    add_payment_routes(app, runtime.bookings, runtime.adapters.gateway)
    add_provider_routes(app, runtime.bookings, runtime.settings)
    return app


async def start_site(
    app: web.Application,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    sock: socket.socket | None = None,
) -> web.AppRunner:
    """Serve ``app`` on host:port, or on an already bound socket."""
    # Graceful shutdown: aiohttp waits up to shutdown_timeout for handlers in flight.
    runner = web.AppRunner(app, shutdown_timeout=20.0, access_log=None)
    await runner.setup()
    site: web.BaseSite = (
        web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
    )
    await site.start()
    return runner
