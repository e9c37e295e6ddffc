"""``travelbot`` (also ``python -m bot``): console, polling, webhook, worker, migrate, doctor."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from contextlib import AsyncExitStack, suppress

from bot.config import Settings, SettingsError, load_settings
from bot.logs import protect_logging

log = logging.getLogger("travelbot")


def setup_logging(level: str, *, quiet: bool = False, log_format: str = "text") -> None:
    from bot.log_format import make_formatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else level)
    for noisy in ("httpx", "httpcore", "aiohttp.access", "telegram.ext.Updater", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # No personal data in any record, whatever handler or format: see bot/logs.py.
    protect_logging()


async def _wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_polling(settings: Settings) -> None:
    from bot.bootstrap import open_runtime, settle_heap
    from bot.web import init_app, start_site
    from handlers.profile import publish_profile
    from handlers.setup import publish_commands

    # Telegram hands updates to one getUpdates poller only: this is the bot's sole worker.
    async with open_runtime(settings, sole_worker=True) as runtime:
        settle_heap()
        runner = await start_site(
            init_app(runtime, telegram_webhook_route=False),
            host="0.0.0.0",  # noqa: S104 - a server's job: behind the platform's router
            port=settings.port,
        )
        app = runtime.application
        await publish_commands(app.bot, settings.admin_user_ids)
        await publish_profile(app.bot)
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(allowed_updates=["message", "callback_query"])
        log.info("polling Telegram; web server on port %s", settings.port)
        try:
            await _wait_for_stop()
        finally:
            await app.updater.stop()
            await app.stop()
            await runner.cleanup()


async def run_webhook(settings: Settings) -> None:
    from bot.bootstrap import open_runtime, settle_heap
    from bot.web import init_app, start_site
    from handlers.profile import publish_profile
    from handlers.setup import publish_commands

    if settings.telegram_webhook_url is None:
        raise SettingsError("TELEGRAM_WEBHOOK_URL: is required for 'travelbot webhook'")
    assert settings.telegram_webhook_secret is not None
    async with open_runtime(settings) as runtime:
        settle_heap()
        app = runtime.application
        runner = await start_site(
            init_app(runtime, telegram_webhook_route=True),
            host="0.0.0.0",  # noqa: S104 - a server's job: behind the platform's router
            port=settings.port,
        )
        await app.start()
        await publish_commands(app.bot, settings.admin_user_ids)
        await publish_profile(app.bot)
        await app.bot.set_webhook(
            url=str(settings.telegram_webhook_url),
            secret_token=settings.telegram_webhook_secret.get_secret_value(),
            allowed_updates=["message", "callback_query"],
        )
        log.info("webhook server on port %s", settings.port)
        print(f"travelbot webhook: listening on port {settings.port}", flush=True)
        try:
            await _wait_for_stop()
        finally:
            # Finish the updates in flight before closing the services they use.
            await runner.cleanup()
            await app.stop()


async def run_worker(settings: Settings) -> None:
    """Run the background jobs (bot/jobs.py) from the arq queue until SIGTERM; jobs in
    progress finish first. Several may run: each job and each scheduled tick runs on one."""
    from bot.bootstrap import open_worker
    from bot.liveness import beat

    if not settings.redis_url:
        raise SettingsError("REDIS_URL: is required for 'travelbot worker' (the job queue)")
    async with open_worker(settings) as runner:
        jobs = ", ".join(sorted(runner.catalogue.scheduled))
        log.info("worker on queue %s; scheduled: %s", runner.queue_name, jobs)
        heartbeat = asyncio.create_task(beat(), name="heartbeat")  # the image's HEALTHCHECK
        print(f"travelbot worker: running jobs from queue {runner.queue_name}", flush=True)
        try:
            await _wait_for_stop()
        finally:
            heartbeat.cancel()


async def run_migrate(settings: Settings) -> int:
    if settings.uses_supabase:
        from services.storage.migrate import MigrationError, apply_migrations

        if settings.database_url is None:
            raise SettingsError(
                "DATABASE_URL: is required to migrate Supabase (the database connection string)"
            )
        try:
            applied = await apply_migrations(settings.database_url.get_secret_value())
        except MigrationError as error:
            # One line an operator can act on (a release phase shows it), not a traceback.
            print(f"travelbot migrate: {error}", file=sys.stderr)
            return 1
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
        return 0
    from services.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(settings.sqlite_path)
    await storage.start()
    await storage.close()
    print(f"SQLite schema is up to date at {settings.sqlite_path}")
    return 0


async def run_doctor(settings: Settings) -> int:
    """Print each port's adapter and whether it answers; exit 1 if any does not."""
    from bot.bootstrap import open_adapters

    failures = 0
    async with AsyncExitStack() as stack:
        try:
            adapters = await open_adapters(settings, stack)
        except Exception as error:  # noqa: BLE001 - the doctor reports, it doesn't crash
            print(f"could not open the adapters: {type(error).__name__}: {error}")
            return 1
        names = adapters.describe()
        checks = {
            "storage": adapters.storage.ping,
            "state": adapters.state.ping,
            "cache": getattr(adapters.cache, "ping", None),
            "email": adapters.mail.ping,
        }
        for port, adapter in names.items():
            check = checks.get(port)
            status = "ok"
            if check is not None:
                try:
                    await asyncio.wait_for(check(), timeout=5)
                except Exception as error:  # noqa: BLE001
                    status = f"FAILED ({type(error).__name__})"
                    failures += 1
            print(f"{port:<9} {adapter:<22} {status}")
        failures += await _jobs_check(settings)
    telegram = "sandbox (console)" if settings.telegram_bot_token is None else "Bot API"
    print(
        f"{'telegram':<9} {telegram:<22} {'not checked' if settings.telegram_bot_token else 'ok'}"
    )
    failures += await _deploy_checks(settings)
    return 1 if failures else 0


async def _jobs_check(settings: Settings) -> int:
    """Where background jobs run, and on arq whether a worker reported in (its health key)."""
    if not settings.jobs_on_redis:
        print(f"{'jobs':<9} {'embedded':<22} ok (this process runs them)")
        return 0
    assert settings.redis_url is not None
    from services.jobs.arq_queue import ArqJobs

    try:
        jobs = await asyncio.wait_for(ArqJobs.connect(settings.redis_url, settings.jobs_queue), 5)
        try:
            seen = await asyncio.wait_for(jobs.worker_seen(), 5)
        finally:
            await jobs.close()
    except Exception as error:  # noqa: BLE001 - the doctor reports, it doesn't crash
        print(f"{'jobs':<9} {'arq':<22} FAILED ({type(error).__name__})")
        return 1
    if seen:
        print(f"{'jobs':<9} {'arq':<22} ok: a worker is running on {settings.jobs_queue}")
        return 0
    print(f"{'jobs':<9} {'arq':<22} FAILED: no worker seen on {settings.jobs_queue}")
    print(f"{'':<9} {'':<22} -> start one: travelbot worker (the Procfile's worker line)")
    return 1


async def run_rekey(settings: Settings) -> None:
    """Re-encrypt stored travellers under the first DATA_ENCRYPTION_KEYS key (key rotation)."""
    from bot.bootstrap import open_storage

    async with AsyncExitStack() as stack:
        storage = await open_storage(settings, stack)
        changed = await storage.reseal_travellers()
    print(f"re-encrypted {changed} row(s) with the newest key; older keys can now be removed")


async def _deploy_checks(settings: Settings) -> int:
    """The database host and the Stripe webhook endpoint (bot.doctor); returns the failures."""
    from bot.doctor import (
        Check,
        check_database_url,
        check_webhook_endpoints,
        stripe_webhook_endpoints,
    )

    checks: list[tuple[str, str, Check]] = []
    if settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
        checks.append(("database", "DATABASE_URL", await check_database_url(dsn)))
    if settings.uses_stripe:
        assert settings.stripe_secret_key is not None
        base = str(settings.stripe_api_base) if settings.stripe_api_base else None
        try:
            endpoints = await stripe_webhook_endpoints(
                settings.stripe_secret_key.get_secret_value(), base
            )
        except Exception as error:  # noqa: BLE001 - the doctor reports, it doesn't crash
            check = Check(False, f"could not list webhook endpoints ({type(error).__name__})")
        else:
            public = str(settings.public_base_url) if settings.public_base_url else None
            check = check_webhook_endpoints(endpoints, public)
        checks.append(("stripe", "webhook endpoint", check))
    for port, subject, check in checks:
        status = "ok" if check.ok else "FAILED"
        print(f"{port:<9} {subject:<22} {status}: {check.summary}")
        if check.advice:
            print(f"{'':<9} {'':<22} -> {check.advice}")
    return sum(not check.ok for _, _, check in checks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="travelbot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    console = commands.add_parser(
        "console", help="chat with the bot in this terminal (no accounts)"
    )
    console.add_argument("--user-id", type=int, default=1001, help="be this Telegram user id")
    console.add_argument("--name", default="Sam", help="your first name in the chat")
    commands.add_parser("polling", help="serve Telegram by long polling")
    commands.add_parser("webhook", help="serve Telegram and Stripe webhooks on PORT")
    commands.add_parser(
        "worker", help="run the background jobs from the Redis job queue (needs REDIS_URL)"
    )
    commands.add_parser("migrate", help="apply the schema to the configured database")
    commands.add_parser("doctor", help="show each port's adapter and check it answers")
    commands.add_parser("newkey", help="print a new key for DATA_ENCRYPTION_KEYS")
    commands.add_parser(
        "rekey", help="re-encrypt stored travellers with the first DATA_ENCRYPTION_KEYS key"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    # PTB 22 reports RetryAfter.retry_after as a timedelta under this switch (the int form is
    # deprecated); handlers/telegram.py accepts both.
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    args = build_parser().parse_args(argv)
    if args.command == "newkey":
        from services.storage.sealing import new_key

        print(new_key())
        return 0
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"travelbot: setting error: {error}", file=sys.stderr)
        return 2
    # The console keeps its chat readable: warnings only, unless LOG_LEVEL asks for more.
    quiet = args.command == "console" and "log_level" not in settings.model_fields_set
    setup_logging(settings.log_level, quiet=quiet, log_format=settings.log_format)
    if settings.sentry_dsn is not None and args.command != "console":
        from bot.sentry import init_sentry

        try:
            init_sentry(settings.sentry_dsn.get_secret_value())
        except SettingsError as error:
            print(f"travelbot: setting error: {error}", file=sys.stderr)
            return 2
    try:
        if args.command == "console":
            from bot.console import run_console

            return asyncio.run(run_console(settings, user_id=args.user_id, name=args.name))
        if args.command == "polling":
            asyncio.run(run_polling(settings))
        elif args.command == "webhook":
            asyncio.run(run_webhook(settings))
        elif args.command == "worker":
            asyncio.run(run_worker(settings))
        elif args.command == "migrate":
            return asyncio.run(run_migrate(settings))
        elif args.command == "doctor":
            return asyncio.run(run_doctor(settings))
        elif args.command == "rekey":
            asyncio.run(run_rekey(settings))
    except SettingsError as error:
        print(f"travelbot: setting error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
