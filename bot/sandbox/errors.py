"""Errors of the sandbox: Bot API failures in Telegram's shape, and misuse of the user side."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A Bot API call that fails the way Telegram fails it: HTTP status, description, parameters."""

    def __init__(
        self, error_code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    @classmethod
    def bad_request(cls, detail: str) -> ApiError:
        return cls(400, f"Bad Request: {detail}")

    @classmethod
    def forbidden(cls, detail: str) -> ApiError:
        return cls(403, f"Forbidden: {detail}")

    @classmethod
    def retry_after(cls, seconds: int) -> ApiError:
        return cls(429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds})

    @classmethod
    def not_found(cls) -> ApiError:
        return cls(404, "Not Found")

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


class SandboxError(ValueError):
    """The user side was asked for something a real Telegram client could not do."""


class SandboxTimeoutError(TimeoutError):
    """A waiting helper gave up; the message says what the sandbox was still waiting for."""
