"""The composition root: the one place adapters are chosen, built, wired and closed.

Nothing is built at import time. ``open_services`` reads the settings, picks each port's adapter
(ARCHITECTURE.md) and builds the services, flow deps and engine on them; ``open_runtime`` puts
the PTB Application and the background work around that. Both close what they opened on exit.
The flow tests at the engine seam call ``open_services`` alone (tests/support/flowkit.py);
``open_worker`` is ``travelbot worker``: the same services, running the arq job queue.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from telegram import Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, ContextTypes, TypeHandler

from bot.config import FlightProvider as ProviderChoice
from bot.config import Settings
from bot.jobs import SEND_BROADCAST, register_jobs
from bot.observability import timed_updates
from bot.telegram_http import AiohttpRequest
from conversations.data import Conversation
from conversations.deps import FlowDeps
from conversations.engine import Engine
from conversations.flows.admin import StoreChatStates
from conversations.router import build_router
from conversations.state import StateStore
from conversations.state_memory import MemoryStateStore
from conversations.state_redis import RedisStateStore
from handlers.telegram import (
    DEPS_KEY,
    BotDeps,
    TelegramNotifier,
    TravelContext,
    on_error,
    on_update,
)
from services.alerts import AlertService
from services.bookings import BookingService
from services.broadcast import BroadcastWorker
from services.cache import Cache, MemoryCache, RedisCache
from services.flights.base import FlightProvider
from services.flights.demo import DemoProvider
from services.flights.duffel import DuffelProvider
from services.flights.kiwi import KiwiProvider
from services.flights.places import PlaceIndex
from services.flights.search import FlightSearchService
from services.jobs.arq_queue import ArqJobs, ArqRunner
from services.jobs.base import JobCatalogue, JobQueue
from services.jobs.embedded import EmbeddedJobs
from services.mail.base import EmailSender
from services.mail.compose import sender_domain
from services.mail.files import FileSender
from services.mail.receipts import EmailReceipts
from services.mail.smtp import SmtpSender, SmtpServer
from services.models import Booking, today_anywhere, utcnow
from services.notify import Notifier
from services.payments.base import PaymentGateway
from services.payments.sandbox import SandboxGateway
from services.payments.stripe import StripeGateway
from services.reminders import ReminderService
from services.retention import RetentionJob
from services.storage import Storage
from services.storage.sealing import Sealer
from services.storage.sqlite import SQLiteStorage
from services.storage.supabase import SupabaseStorage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Adapters:
    storage: Storage
    state: StateStore
    cache: Cache
    provider: FlightProvider
    gateway: PaymentGateway
    mail: EmailSender

    def describe(self) -> dict[str, str]:
        return {
            "storage": self.storage.name,
            "state": self.state.name,
            "cache": type(self.cache).__name__,
            "flights": self.provider.name,
            "payments": self.gateway.name,
            "email": self.mail.name,
        }


@dataclass(slots=True)
class Runtime:
    """Everything a running bot holds, for the transports (console, polling, webhook)."""

    settings: Settings
    adapters: Adapters
    application: Application[Any, Any, Any, Any, Any, Any]
    bookings: BookingService
    engine: Engine[FlowDeps, Conversation]
    places: PlaceIndex
    broadcasts: BroadcastWorker | None = None
    receipts: EmailReceipts | None = None
    jobs: JobQueue | None = None
    reminders: ReminderService | None = None  # send_due: a scheduled job (bot/jobs.py)
    alerts: AlertService | None = None  # check_due: a scheduled job (bot/jobs.py)


async def open_storage(settings: Settings, stack: AsyncExitStack) -> Storage:
    """The storage adapter the settings choose, started; closed by ``stack``."""
    storage: Storage
    if settings.uses_supabase:
        assert settings.supabase_service_role_key is not None
        storage = await SupabaseStorage.create(
            str(settings.supabase_url),
            settings.supabase_service_role_key.get_secret_value(),
            sealer=Sealer(settings.encryption_keys),
        )
    else:
        storage = SQLiteStorage(settings.sqlite_path, encryption_keys=settings.encryption_keys)
    await storage.start()
    stack.push_async_callback(storage.close)
    return storage


async def open_adapters(
    settings: Settings,
    stack: AsyncExitStack,
    places: PlaceIndex | None = None,
    *,
    provider: FlightProvider | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Adapters:
    """Build each port's adapter from the settings; registered on ``stack`` for closing.

    ``provider`` replaces the configured flight provider (tests with a scripted demo fare)."""
    places = places or PlaceIndex.default()
    storage = await open_storage(settings, stack)

    state: StateStore
    cache: Cache
    if settings.redis_url:
        state = RedisStateStore.from_url(settings.redis_url, prefix=settings.redis_prefix)
        cache = RedisCache.from_url(settings.redis_url, prefix=f"{settings.redis_prefix}:cache")
    else:
        state = MemoryStateStore()
        cache = MemoryCache()
    stack.push_async_callback(state.close)
    stack.push_async_callback(cache.close)

    if provider is not None:
        pass
    elif settings.flight_provider is ProviderChoice.KIWI:
        assert settings.kiwi_api_key is not None
        provider = KiwiProvider(
            api_key=settings.kiwi_api_key.get_secret_value(),
            base_url=str(settings.kiwi_base_url),
            places=places,
            deposit_email=settings.kiwi_deposit_email,
        )
    elif settings.flight_provider is ProviderChoice.DUFFEL:
        assert settings.duffel_access_token is not None
        provider = DuffelProvider(
            settings.duffel_access_token.get_secret_value(),
            base_url=str(settings.duffel_base_url),
        )
    else:
        provider = DemoProvider(places=places, today=lambda: today_anywhere(clock()), clock=clock)
    stack.push_async_callback(provider.close)

    gateway: PaymentGateway
    if settings.uses_stripe:
        assert settings.stripe_secret_key is not None
        assert settings.stripe_webhook_secret is not None
        gateway = StripeGateway(
            secret_key=settings.stripe_secret_key.get_secret_value(),
            webhook_secret=settings.stripe_webhook_secret.get_secret_value(),
            api_base=str(settings.stripe_api_base) if settings.stripe_api_base else None,
        )
    else:
        gateway = SandboxGateway(storage, settings.base_url, clock=clock)
    stack.push_async_callback(gateway.close)

    mail: EmailSender
    if settings.smtp_url is not None:
        mail = SmtpSender(
            SmtpServer.from_url(settings.smtp_url.get_secret_value()),
            local_hostname=sender_domain(settings.email_sender_address),
        )
    else:
        mail = FileSender(settings.outbox_dir)
    stack.push_async_callback(mail.close)
    return Adapters(
        storage=storage,
        state=state,
        cache=cache,
        provider=provider,
        gateway=gateway,
        mail=mail,
    )


# Updates handled at once by one process: PTB's bound when polling, bot/web.py's on the webhook.
UPDATES_IN_FLIGHT = 64


def build_application(
    settings: Settings, *, token: str, base_url: str | None = None
) -> Application[Any, Any, Any, Any, Any, Any]:
    builder = (
        ApplicationBuilder()
        .token(token)
        .context_types(ContextTypes(context=TravelContext, bot_data=dict))
        .rate_limiter(AIORateLimiter(max_retries=3))
        .concurrent_updates(UPDATES_IN_FLIGHT)
        # Our aiohttp transport, not PTB's httpx one: see bot.telegram_http for why.
        .request(AiohttpRequest())
        .get_updates_request(AiohttpRequest(connection_pool_size=1))
    )
    api = (base_url or str(settings.telegram_api_base_url)).rstrip("/")
    builder = builder.base_url(f"{api}/bot").base_file_url(f"{api}/file/bot")
    return builder.build()


@dataclass(slots=True)
class Services:
    """The services, flow deps and engine built over the adapters: everything but a transport."""

    adapters: Adapters
    places: PlaceIndex
    bookings: BookingService
    broadcasts: BroadcastWorker
    receipts: EmailReceipts
    retention: RetentionJob
    deps: FlowDeps
    engine: Engine[FlowDeps, Conversation]
    # The background work (bot/jobs.py) and where it goes: this process (embedded) or Redis.
    catalogue: JobCatalogue
    jobs: JobQueue
    reminders: ReminderService  # its send_due is a scheduled job (bot/jobs.py)
    alerts: AlertService  # its check_due is a scheduled job (bot/jobs.py)


async def open_job_queue(
    settings: Settings, stack: AsyncExitStack, catalogue: JobCatalogue
) -> JobQueue:
    """Embedded (this process runs the catalogue) or arq (a ``travelbot worker`` does)."""
    jobs: JobQueue
    if settings.jobs_on_redis:
        assert settings.redis_url is not None
        jobs = await ArqJobs.connect(settings.redis_url, settings.jobs_queue)
    else:
        jobs = EmbeddedJobs(catalogue)
    # Closed before the adapters: jobs in flight (emails) get a moment to finish or be queued.
    stack.push_async_callback(jobs.close)
    return jobs


async def open_services(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    notifier: Notifier,
    bot_id: int,
    bot_username: str | None = None,
    clock: Callable[[], datetime] = utcnow,
    provider: FlightProvider | None = None,
    places: PlaceIndex | None = None,
    sole_worker: bool = False,
    show_typing: Callable[[int], Awaitable[None]] | None = None,
) -> Services:
    """The one composition root of what a turn runs on, shared by ``open_runtime`` (with PTB
    behind it) and the flow tests (tests/support/flowkit.py, driving ``Engine.handle`` with a
    ``MemoryNotifier``). ``bot_id`` keys the chats' state; ``bot_username`` makes Stripe's
    return links open the chat. Nothing is started here: resuming broadcasts, closing the
    email retries and the scheduled jobs belong to the caller (they are background work); the
    seam runs jobs on demand (``EmbeddedJobs.run_scheduled``, ``drain``)."""
    places = places or PlaceIndex.default()
    adapters = await open_adapters(settings, stack, places, provider=provider, clock=clock)
    catalogue = JobCatalogue()
    jobs = await open_job_queue(settings, stack, catalogue)

    def success_url(booking: Booking) -> str:
        if adapters.gateway.is_sandbox or not bot_username:
            return f"{settings.base_url}/checkout/done/{booking.reference}"
        return f"https://t.me/{bot_username}?start=paid_{booking.reference}"

    def cancel_url(booking: Booking) -> str:
        if adapters.gateway.is_sandbox or not bot_username:
            return f"{settings.base_url}/checkout/done/{booking.reference}"
        # Stripe's page sends the traveller here when they cancel: the chat cancels it.
        return f"https://t.me/{bot_username}?start=cancelled_{booking.reference}"

    alert: Callable[[str], Awaitable[None]] = admin_alerter(notifier, settings.admin_user_ids)
    receipts = EmailReceipts(
        adapters.mail,
        sender_address=settings.email_sender_address,
        load=adapters.storage.get_booking,
        jobs=jobs,
        alert_admins=alert,
    )
    bookings = BookingService(
        adapters.storage,
        adapters.provider,
        adapters.gateway,
        notifier,
        success_url=success_url,
        cancel_url=cancel_url,
        payment_window=timedelta(minutes=settings.payment_window_minutes),
        alert_admins=alert,
        receipts=receipts,
        stuck_after=timedelta(seconds=settings.reconcile_after_seconds),
        fare_tolerance_percent=settings.fare_increase_tolerance_percent,
        fare_increase_action=settings.fare_increase_action.value,
        clock=clock,
    )
    search = FlightSearchService(adapters.provider, adapters.cache, adapters.storage)

    async def dispatch_broadcast(broadcast_id: int) -> None:
        await jobs.enqueue(SEND_BROADCAST, broadcast_id=broadcast_id)

    broadcasts = BroadcastWorker(
        adapters.storage,
        notifier,
        sole_worker=sole_worker,
        # Sent where jobs run: a worker process on arq; here (at once) when embedded.
        dispatch=None if jobs.runs_here else dispatch_broadcast,
    )
    alerts = AlertService(
        adapters.storage,
        search,
        notifier,
        max_per_user=settings.max_alerts_per_user,
        searches_per_run=settings.alert_searches_per_run,
        check_every=timedelta(minutes=settings.alert_check_interval_minutes),
        clock=clock,
    )
    deps = FlowDeps(
        storage=adapters.storage,
        places=places,
        search=search,
        provider=adapters.provider,
        bookings=bookings,
        currency=settings.default_currency,
        admin_ids=settings.admin_user_ids,
        demo_fares=adapters.provider.name == "demo",
        sandbox_payments=adapters.gateway.is_sandbox,
        broadcasts=broadcasts,
        show_typing=show_typing,
        clock=clock,
        # An admin's /block reaches the user's conversation in progress through this.
        chats=StoreChatStates(adapters.state, bot_id=bot_id, ttl=settings.conversation_ttl),
        alerts=alerts,
    )
    engine = Engine(
        adapters.state, build_router(), deps, bot_id=bot_id, ttl=settings.conversation_ttl
    )
    stack.push_async_callback(engine.close)
    services = Services(
        adapters=adapters,
        places=places,
        bookings=bookings,
        broadcasts=broadcasts,
        receipts=receipts,
        retention=RetentionJob(adapters.storage, settings.retention, clock=clock),
        deps=deps,
        engine=engine,
        catalogue=catalogue,
        jobs=jobs,
        reminders=ReminderService(adapters.storage, notifier, clock=clock),
        alerts=alerts,
    )
    register_jobs(catalogue, settings, services)
    return services


async def _open_application(
    settings: Settings, stack: AsyncExitStack, token: str | None, base_url: str | None
) -> Application[Any, Any, Any, Any, Any, Any]:
    """The Bot API client, initialized (getMe done: the bot's id keys every chat's state, its
    username the return links); shut down by ``stack``."""
    bot_token = token or (
        settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else None
    )
    if bot_token is None:
        raise RuntimeError("TELEGRAM_BOT_TOKEN: is required for this command")
    application = build_application(settings, token=bot_token, base_url=base_url)
    await application.initialize()
    stack.push_async_callback(application.shutdown)
    return application


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    token: str | None = None,
    telegram_base_url: str | None = None,
    provider: FlightProvider | None = None,
    sole_worker: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> AsyncIterator[Runtime]:
    """Open everything; the Application is initialized (getMe done) but not started.

    ``sole_worker``: no other process serves this bot (polling, console), so work a previous
    run left half done is taken over at once instead of when its lease runs out. ``clock``:
    the current instant for every service and flow (tests fix it; a day must not depend on when
    the suite runs)."""
    async with AsyncExitStack() as stack:
        application = await _open_application(settings, stack, token, telegram_base_url)
        services = await open_services(
            settings,
            stack,
            notifier=TelegramNotifier(application),
            bot_id=application.bot.id,
            bot_username=application.bot.username,
            clock=clock,
            provider=provider,
            sole_worker=sole_worker,
            show_typing=_typing_sender(application),
        )
        adapters, places, engine = services.adapters, services.places, services.engine
        bookings, broadcasts, jobs = services.bookings, services.broadcasts, services.jobs
        application.bot_data[DEPS_KEY] = BotDeps(engine=engine, storage=adapters.storage)
        application.add_handler(TypeHandler(Update, timed_updates(on_update)), group=1)
        application.add_error_handler(on_error)
        if isinstance(jobs, EmbeddedJobs):
            # This process runs the background work: resume what a previous run left
            # unfinished, then tick. On exit the lanes finish the message in hand before the
            # Application shuts down (the stack unwinds last-in, first-out).
            await broadcasts.start()
            stack.push_async_callback(broadcasts.stop)
            jobs.start()
            stack.push_async_callback(jobs.close)
        yield Runtime(
            settings=settings,
            adapters=adapters,
            application=application,
            bookings=bookings,
            engine=engine,
            places=places,
            broadcasts=broadcasts,
            receipts=services.receipts,
            jobs=jobs,
            reminders=services.reminders,
            alerts=services.alerts,
        )


@asynccontextmanager
async def open_worker(
    settings: Settings, *, token: str | None = None, telegram_base_url: str | None = None
) -> AsyncIterator[ArqRunner]:
    """``travelbot worker``: the services over a Bot API client (getMe, no polling, no
    webhook), running the arq queue's jobs until the context exits."""
    redis_url = settings.redis_url
    if not redis_url:
        raise RuntimeError("REDIS_URL: is required for 'travelbot worker' (the job queue)")
    settings = settings.model_copy(update={"job_queue_backend": "arq"})
    async with AsyncExitStack() as stack:
        application = await _open_application(settings, stack, token, telegram_base_url)
        services = await open_services(
            settings,
            stack,
            notifier=TelegramNotifier(application),
            bot_id=application.bot.id,
            bot_username=application.bot.username,
        )
        await services.broadcasts.start()  # what a dead worker left, once its lease ran out
        stack.push_async_callback(services.broadcasts.stop)
        runner = ArqRunner(
            services.catalogue,
            redis_url=redis_url,
            queue_name=settings.jobs_queue,
            job_timeout=settings.job_timeout_seconds,
            in_progress_margin=min(10.0, settings.job_timeout_seconds),
        )
        await runner.start()
        stack.push_async_callback(runner.stop)
        yield runner


def settle_heap() -> None:
    """Take what start-up built (the airport index alone is some 200,000 objects) out of the
    cyclic collector's sight, so that its full collections scan only what updates create.
    For long-running servers; about a tenth less CPU per update in benchmarks/throughput.py."""
    gc.collect()
    gc.freeze()


def _typing_sender(
    application: Application[Any, Any, Any, Any, Any, Any],
) -> Callable[[int], Awaitable[None]]:
    async def show_typing(chat_id: int) -> None:
        try:
            await application.bot.send_chat_action(chat_id, ChatAction.TYPING)
        except TelegramError:
            log.info("could not show 'typing' to a chat", exc_info=True)

    return show_typing


def admin_alerter(
    notifier: Notifier, admin_ids: frozenset[int]
) -> Callable[[str], Awaitable[None]]:
    """Alerts are HTML, their values escaped where they are written (services/texts.py), as
    every message is: escaping them again here showed admins ``&amp;`` for ``&``."""
    from services.messages import Message

    async def alert(text: str) -> None:
        shown = text if text.startswith("⚠️") else f"⚠️ {text}"  # not "⚠️ ⚠️"
        for admin_id in admin_ids:
            try:
                await notifier.notify(admin_id, Message(text=shown))
            except Exception:
                log.warning("could not alert admin %s", admin_id, exc_info=True)

    return alert
