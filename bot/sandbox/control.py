"""The sandbox's user side over HTTP, for tests and consoles that run in another process.

Routes live under ``/sandbox/`` next to the Bot API; ``SandboxClient`` calls them and returns
the same record types as the in-process ``SandboxBotApi``. Bad requests answer 400 with
``{"error": ...}``, a waiting helper that gives up answers 408.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from bot.sandbox.errors import SandboxError, SandboxTimeoutError
from bot.sandbox.models import (
    CallbackQueryRecord,
    ChatMessage,
    EventKind,
    JsonDict,
    SandboxEvent,
    SandboxUser,
    UserAction,
)
from bot.sandbox.ratelimit import SandboxLimits

if TYPE_CHECKING:
    from bot.sandbox.server import SandboxBotApi

_Route = Callable[[web.Request], Awaitable[web.Response]]


def _ok(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda value: json.dumps(value, ensure_ascii=False))


def _guarded(route: _Route) -> _Route:
    async def guarded(request: web.Request) -> web.Response:
        try:
            return await route(request)
        except SandboxTimeoutError as error:
            return web.json_response({"error": str(error)}, status=408)
        except (SandboxError, KeyError, TypeError, ValueError) as error:
            return web.json_response({"error": str(error)}, status=400)

    return guarded


async def _body(request: web.Request) -> JsonDict:
    if not request.body_exists:
        return {}
    data = await request.json()
    if not isinstance(data, dict):
        raise SandboxError("the request body must be a JSON object")
    return data


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


class _ControlRoutes:
    """The ``/sandbox/...`` handlers; each one is a thin call into the sandbox."""

    def __init__(self, sandbox: SandboxBotApi) -> None:
        self.sandbox = sandbox

    def table(self) -> list[tuple[str, str, _Route]]:
        return [
            ("GET", "/sandbox/info", self.info),
            ("GET", "/sandbox/users", self.list_users),
            ("POST", "/sandbox/users", self.add_user),
            ("POST", "/sandbox/users/{user_id}/send", self.send),
            ("POST", "/sandbox/users/{user_id}/press", self.press),
            ("POST", "/sandbox/users/{user_id}/block", self.block),
            ("POST", "/sandbox/users/{user_id}/unblock", self.unblock),
            ("GET", "/sandbox/chats/{chat_id}/messages", self.messages),
            ("GET", "/sandbox/events", self.events),
            ("GET", "/sandbox/callback-queries", self.callback_queries),
            ("POST", "/sandbox/wait/idle", self.wait_idle),
            ("POST", "/sandbox/wait/messages", self.wait_messages),
            ("POST", "/sandbox/wait/reply", self.wait_reply),
            ("POST", "/sandbox/webhook-targets", self.webhook_targets),
            ("PUT", "/sandbox/limits", self.limits),
        ]

    async def info(self, request: web.Request) -> web.Response:
        sandbox = self.sandbox
        return _ok(
            {
                "url": sandbox.url,
                "token": sandbox.token,
                "bot": sandbox.bot_user(),
                "webhook_url": sandbox.webhook_url,
                "pending_updates": sandbox.pending_updates(),
                "last_seq": sandbox.last_seq,
                "limits": dataclasses.asdict(sandbox.limits),
            }
        )

    async def list_users(self, request: web.Request) -> web.Response:
        return _ok([user.to_json() for user in self.sandbox.users()])

    async def add_user(self, request: web.Request) -> web.Response:
        body = await _body(request)
        user = await self.sandbox.add_user(
            body.get("id"),
            body.get("first_name", "Traveller"),
            body.get("username"),
            last_name=body.get("last_name"),
            language_code=body.get("language_code", "en"),
        )
        return _ok(user.to_json())

    async def send(self, request: web.Request) -> web.Response:
        body = await _body(request)
        user_id = int(request.match_info["user_id"])
        action = await self.sandbox.user_sends(user_id, str(body["text"]))
        return _ok(action.to_json())

    async def press(self, request: web.Request) -> web.Response:
        body = await _body(request)
        user_id = int(request.match_info["user_id"])
        message_id = body.get("message_id")
        if "label" in body:
            label = str(body["label"])
            action = await self.sandbox.user_presses_label(user_id, label, message_id)
        elif message_id is None:
            raise SandboxError("message_id is required to press a button")
        elif body.get("raw"):
            data = str(body["callback_data"])
            action = await self.sandbox.user_presses_raw(user_id, int(message_id), data)
        else:
            data = str(body["callback_data"])
            action = await self.sandbox.user_presses(user_id, int(message_id), data)
        return _ok(action.to_json())

    async def block(self, request: web.Request) -> web.Response:
        action = await self.sandbox.user_blocks_bot(int(request.match_info["user_id"]))
        return _ok(action.to_json())

    async def unblock(self, request: web.Request) -> web.Response:
        action = await self.sandbox.user_unblocks_bot(int(request.match_info["user_id"]))
        return _ok(action.to_json())

    async def messages(self, request: web.Request) -> web.Response:
        include_user = request.query.get("include_user", "1") not in ("0", "false")
        chat_id = int(request.match_info["chat_id"])
        found = self.sandbox.transcript(chat_id, include_user=include_user)
        return _ok([message.to_json() for message in found])

    async def events(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        wait = float(request.query.get("wait", "0"))
        kinds = {EventKind(kind) for kind in request.query.getall("kind", [])} or None
        if wait > 0 and not self.sandbox.events(since, kinds=kinds):
            try:
                await self.sandbox.wait_for_event(
                    lambda event: kinds is None or event.kind in kinds, since=since, timeout=wait
                )
            except SandboxTimeoutError:
                return _ok([])
        return _ok([event.to_json() for event in self.sandbox.events(since, kinds=kinds)])

    async def callback_queries(self, request: web.Request) -> web.Response:
        return _ok([record.to_json() for record in self.sandbox.callback_queries()])

    async def wait_idle(self, request: web.Request) -> web.Response:
        body = await _body(request)
        chat_id = body.get("chat_id")
        await self.sandbox.wait_idle(
            None if chat_id is None else int(chat_id),
            quiet=_optional_float(body.get("quiet")),
            timeout=_optional_float(body.get("timeout")),
        )
        return _ok({"last_seq": self.sandbox.last_seq})

    async def wait_messages(self, request: web.Request) -> web.Response:
        body = await _body(request)
        since = body.get("since")
        found = await self.sandbox.wait_for_messages(
            int(body["chat_id"]),
            int(body.get("count", 1)),
            since=None if since is None else int(since),
            timeout=_optional_float(body.get("timeout")),
        )
        return _ok([message.to_json() for message in found])

    async def wait_reply(self, request: web.Request) -> web.Response:
        body = await _body(request)
        found = await self.sandbox.wait_for_reply(
            UserAction.from_json(body["action"]),
            quiet=_optional_float(body.get("quiet")),
            timeout=_optional_float(body.get("timeout")),
        )
        return _ok([message.to_json() for message in found])

    async def webhook_targets(self, request: web.Request) -> web.Response:
        body = await _body(request)
        urls = [str(url) for url in body.get("urls", [])]
        await self.sandbox.set_webhook_targets(urls, body.get("secret_token"))
        return _ok({"urls": urls})

    async def limits(self, request: web.Request) -> web.Response:
        body = await _body(request)
        known = {item.name for item in dataclasses.fields(SandboxLimits)}
        unknown = set(body) - known
        if unknown:
            raise SandboxError(f"unknown limit(s) {sorted(unknown)}; known: {sorted(known)}")
        return _ok(dataclasses.asdict(self.sandbox.configure_limits(**body)))


def add_control_routes(app: web.Application, sandbox: SandboxBotApi) -> None:
    """Register the ``/sandbox/...`` routes that drive ``sandbox``."""
    for method, path, route in _ControlRoutes(sandbox).table():
        app.router.add_route(method, path, _guarded(route))


class SandboxClient:
    """Drives a sandbox running in another process through its ``/sandbox/`` routes.

    Mirrors the user side of SandboxBotApi; every method is async here, reads included.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.url = url.rstrip("/")
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def base_url(self) -> str:
        """What to pass to ``ApplicationBuilder().base_url(...)``."""
        return f"{self.url}/bot"

    async def _call(
        self, method: str, path: str, body: JsonDict | None = None, params: Any = None
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(
            method, f"{self.url}{path}", json=body, params=params
        ) as response:
            if response.content_type != "application/json":
                raise SandboxError(f"HTTP {response.status} from {path}: {await response.text()}")
            data = await response.json()
            if response.status == 408:
                raise SandboxTimeoutError(data["error"])
            if response.status >= 400:
                raise SandboxError(data.get("error", f"HTTP {response.status}"))
            return data

    async def info(self) -> JsonDict:
        result: JsonDict = await self._call("GET", "/sandbox/info")
        return result

    async def add_user(
        self,
        user_id: int | None = None,
        first_name: str = "Traveller",
        username: str | None = None,
        *,
        last_name: str | None = None,
        language_code: str | None = "en",
    ) -> SandboxUser:
        body = {
            "id": user_id,
            "first_name": first_name,
            "username": username,
            "last_name": last_name,
            "language_code": language_code,
        }
        return SandboxUser.from_json(await self._call("POST", "/sandbox/users", body))

    async def users(self) -> list[SandboxUser]:
        return [SandboxUser.from_json(item) for item in await self._call("GET", "/sandbox/users")]

    async def user_sends(self, user_id: int, text: str) -> UserAction:
        data = await self._call("POST", f"/sandbox/users/{user_id}/send", {"text": text})
        return UserAction.from_json(data)

    async def user_presses(self, user_id: int, message_id: int, callback_data: str) -> UserAction:
        body = {"message_id": message_id, "callback_data": callback_data}
        return UserAction.from_json(
            await self._call("POST", f"/sandbox/users/{user_id}/press", body)
        )

    async def user_presses_label(
        self, user_id: int, label: str, message_id: int | None = None
    ) -> UserAction:
        body = {"label": label, "message_id": message_id}
        return UserAction.from_json(
            await self._call("POST", f"/sandbox/users/{user_id}/press", body)
        )

    async def user_presses_raw(
        self, user_id: int, message_id: int, callback_data: str
    ) -> UserAction:
        body = {"message_id": message_id, "callback_data": callback_data, "raw": True}
        return UserAction.from_json(
            await self._call("POST", f"/sandbox/users/{user_id}/press", body)
        )

    async def user_blocks_bot(self, user_id: int) -> UserAction:
        return UserAction.from_json(await self._call("POST", f"/sandbox/users/{user_id}/block"))

    async def user_unblocks_bot(self, user_id: int) -> UserAction:
        return UserAction.from_json(await self._call("POST", f"/sandbox/users/{user_id}/unblock"))

    async def transcript(self, chat_id: int, *, include_user: bool = True) -> list[ChatMessage]:
        params = {"include_user": "1" if include_user else "0"}
        data = await self._call("GET", f"/sandbox/chats/{chat_id}/messages", params=params)
        return [ChatMessage.from_json(item) for item in data]

    async def bot_messages(self, chat_id: int) -> list[ChatMessage]:
        return await self.transcript(chat_id, include_user=False)

    async def events(
        self, since: int = 0, *, kinds: set[EventKind] | None = None, wait: float = 0.0
    ) -> list[SandboxEvent]:
        """Events after ``since``; with ``wait`` > 0, waits up to that long for the first one."""
        params: list[tuple[str, str]] = [("since", str(since)), ("wait", str(wait))]
        params += [("kind", kind.value) for kind in kinds or ()]
        data = await self._call("GET", "/sandbox/events", params=params)
        return [SandboxEvent.from_json(item) for item in data]

    async def api_errors(self, since: int = 0) -> list[SandboxEvent]:
        return await self.events(since, kinds={EventKind.API_ERROR})

    async def callback_queries(self) -> list[CallbackQueryRecord]:
        data = await self._call("GET", "/sandbox/callback-queries")
        return [CallbackQueryRecord.from_json(item) for item in data]

    async def all_callbacks_answered(self) -> bool:
        return all(record.answered for record in await self.callback_queries())

    async def wait_idle(
        self,
        chat_id: int | None = None,
        *,
        quiet: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - passed to the server
    ) -> None:
        body = {"chat_id": chat_id, "quiet": quiet, "timeout": timeout}
        await self._call("POST", "/sandbox/wait/idle", body)

    async def wait_for_messages(
        self,
        chat_id: int,
        count: int = 1,
        *,
        since: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - passed to the server
    ) -> list[ChatMessage]:
        body = {"chat_id": chat_id, "count": count, "since": since, "timeout": timeout}
        data = await self._call("POST", "/sandbox/wait/messages", body)
        return [ChatMessage.from_json(item) for item in data]

    async def wait_for_reply(
        self,
        action: UserAction,
        *,
        quiet: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> list[ChatMessage]:
        body = {"action": action.to_json(), "quiet": quiet, "timeout": timeout}
        data = await self._call("POST", "/sandbox/wait/reply", body)
        return [ChatMessage.from_json(item) for item in data]

    async def set_webhook_targets(self, urls: list[str], secret_token: str | None = None) -> None:
        await self._call(
            "POST", "/sandbox/webhook-targets", {"urls": urls, "secret_token": secret_token}
        )

    async def configure_limits(self, **changes: Any) -> SandboxLimits:
        data = await self._call("PUT", "/sandbox/limits", changes)
        return SandboxLimits(**data)
