"""The embedded default: each email is written as an ``.eml`` file instead of being sent.

Any mail program opens the files, so the console shows exactly what a traveller would get.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from services.mail.base import EmailUnavailableError


class FileSender:
    """``EmailSender`` that writes ``<UTC time>-<random>.eml`` files into a folder."""

    name = "files"

    def __init__(self, folder: Path, *, on_written: Callable[[Path], None] | None = None) -> None:
        self._folder = folder
        # The console sets this to print where each email went.
        self.on_written = on_written

    @property
    def where(self) -> str:
        return str(self._folder)

    async def send(self, message: EmailMessage) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self._folder / f"{stamp}-{secrets.token_hex(3)}.eml"
        try:
            await asyncio.to_thread(self._write, path, message)
        except OSError as error:
            raise EmailUnavailableError(
                f"could not write to {self._folder} ({type(error).__name__})"
            ) from None
        if self.on_written is not None:
            self.on_written(path)

    def _write(self, path: Path, message: EmailMessage) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(message.as_bytes())
        partial.replace(path)  # a reader never sees half a message

    async def ping(self) -> None:
        def check() -> None:
            self._folder.mkdir(parents=True, exist_ok=True)
            probe = self._folder / f".probe-{secrets.token_hex(3)}"
            probe.write_bytes(b"")
            probe.unlink()

        try:
            await asyncio.to_thread(check)
        except OSError as error:
            raise EmailUnavailableError(
                f"cannot write to {self._folder} ({type(error).__name__})"
            ) from None

    async def close(self) -> None:
        return None
