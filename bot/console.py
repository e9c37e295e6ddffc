"""``travelbot console``: chat with the real bot in a terminal, on the embedded defaults.

The real PTB Application long-polls an in-process sandbox Bot API; each line typed is a message
from the traveller, a number presses that button of the latest keyboard, ``/quit`` leaves. The
bot's web server runs too, so the sandbox checkout page can be opened in a browser (or POSTed to
by a script) and the confirmation arrives in the chat the way a Stripe webhook would bring it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bot.bootstrap import open_runtime
from bot.config import Settings
from bot.sandbox import SandboxBotApi
from bot.sandbox.models import ChatMessage, EventKind, SandboxEvent
from bot.web import init_app, start_site
from handlers.setup import publish_commands
from services.mail.files import FileSender

# The sandbox accepts any well-formed token; this one belongs to no real bot.
SANDBOX_TOKEN = "123456789:SANDBOX-console-token-not-a-secret"  # noqa: S105
REPLY_TIMEOUT = 30.0


@dataclass(slots=True)
class Keyboard:
    """The buttons of the latest message that had any, numbered as printed."""

    message_id: int = 0
    buttons: list[tuple[str, str | None, str | None]] = field(default_factory=list)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ConsolePrinter:
    """Prints what the bot sends or edits in the traveller's chat, as it happens."""

    def __init__(self, chat_id: int) -> None:
        self.chat_id = chat_id
        self.keyboard = Keyboard()

    def __call__(self, event: SandboxEvent) -> None:
        if event.chat_id != self.chat_id:
            return
        if event.kind is EventKind.CALLBACK_ANSWERED and event.detail.get("text"):
            print(f"bot (notice): {event.detail['text']}", flush=True)
            return
        if event.message is None:
            return
        if event.kind is EventKind.BOT_MESSAGE:
            self.show(event.message, edited=False)
        elif event.kind is EventKind.BOT_EDIT:
            self.show(event.message, edited=True)

    def show(self, message: ChatMessage, *, edited: bool) -> None:
        if not message.from_bot:
            return
        head = "bot (updated)" if edited else "bot"
        if message.document is not None:
            size = len(message.document.content)
            print(f"bot (file): {message.document.file_name or 'file'} ({size} bytes)", flush=True)
            if not message.text and not message.buttons:
                return
        lines = message.text.splitlines() or [""]
        out = [f"{head}: {lines[0]}", *(f"     {line}" for line in lines[1:])]
        if message.buttons:
            numbered: list[tuple[str, str | None, str | None]] = []
            rows = []
            for row in message.buttons:
                labels = []
                for button in row:
                    numbered.append((button.label, button.callback_data, button.url))
                    label = f"[{len(numbered)}] {button.label}"
                    if button.url:
                        label += f" <{button.url}>"
                    labels.append(label)
                rows.append("  ".join(labels))
            out += [f"     {row}" for row in rows]
            self.keyboard = Keyboard(message_id=message.message_id, buttons=numbered)
        print("\n".join(out), flush=True)


async def _read_line() -> str | None:
    line = await asyncio.to_thread(sys.stdin.readline)
    return None if line == "" else line.rstrip("\r\n")


async def run_console(settings: Settings, *, user_id: int, name: str) -> int:
    if not _port_free(settings.port):
        settings = settings.model_copy(update={"port": _free_port()})
    # The console's chat is on its own sandbox bot: nobody else's worker would run its jobs.
    settings = settings.model_copy(update={"job_queue_backend": "embedded"})
    sandbox = SandboxBotApi(token=SANDBOX_TOKEN)
    await sandbox.start()
    try:
        await sandbox.add_user(user_id, first_name=name or "Traveller", username=None)
        printer = ConsolePrinter(user_id)
        sandbox.add_listener(printer)
        async with open_runtime(
            settings, token=SANDBOX_TOKEN, telegram_base_url=sandbox.url
        ) as runtime:
            runner = await start_site(
                init_app(runtime, telegram_webhook_route=False),
                host="127.0.0.1",
                port=settings.port,
            )
            app = runtime.application
            await publish_commands(app.bot, settings.admin_user_ids)
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling(poll_interval=0.0, timeout=10)
            adapters = runtime.adapters.describe()
            mail = runtime.adapters.mail
            if isinstance(mail, FileSender):
                mail.on_written = _print_email_path
                emails = f"Emails to travellers are written as .eml files into {mail.where}."
            else:
                emails = f"Emails to travellers are sent over SMTP ({mail.where})."
            print(
                f"travelbot console · you are user {user_id} ({name}) · flights: "
                f"{adapters['flights']}, payments: {adapters['payments']}, storage: "
                f"{adapters['storage']}\nCheckout pages are served at {settings.base_url}. "
                f"{emails}\nType a message, a button number, or /quit.",
                flush=True,
            )
            try:
                await _loop(sandbox, printer, user_id)
            finally:
                await app.updater.stop()
                await app.stop()
                await runner.cleanup()
    finally:
        await sandbox.stop()
    return 0


def _print_email_path(path: Path) -> None:
    print(f"(email to the traveller written to {path})", flush=True)


async def _loop(sandbox: SandboxBotApi, printer: ConsolePrinter, user_id: int) -> None:
    while True:
        line = await _read_line()
        if line is None or line.strip() == "/quit":
            # Piped input ends: give notifications in flight (a payment confirmation) a moment.
            with contextlib.suppress(Exception):
                await sandbox.wait_idle(user_id, quiet=0.5, timeout=5)
            return
        text = line.strip()
        if not text:
            continue
        if text.isdigit() and 1 <= int(text) <= len(printer.keyboard.buttons):
            label, callback_data, url = printer.keyboard.buttons[int(text) - 1]
            if url is not None:
                print(f"(open this link in your browser: {url})", flush=True)
                continue
            assert callback_data is not None
            print(f"you pressed: {label}", flush=True)
            action = await sandbox.user_presses(user_id, printer.keyboard.message_id, callback_data)
        else:
            action = await sandbox.user_sends(user_id, text)
        try:
            await sandbox.wait_for_reply(action, timeout=REPLY_TIMEOUT)
        except Exception:  # noqa: BLE001 - no reply (e.g. flood control silence) is not fatal
            await asyncio.sleep(0)
