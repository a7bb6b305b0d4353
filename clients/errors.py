"""Typed exceptions for the API's error body `{"error": {"type": ..., "message": ...}}`, one class per status."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class PromptswapError(Exception):
    """An error answer from the server: its HTTP status, the API's `error.type` and its `error.message`."""

    def __init__(self, status_code: int, error_type: str, message: str) -> None:
        super().__init__(f"{status_code} {error_type}: {message}")
        self.status_code = status_code
        self.error_type = error_type
        self.message = message


class BadRequest(PromptswapError):
    """400: the request is malformed."""


class Unauthorized(PromptswapError):
    """401: the route needs `Authorization: Bearer <key>` and none was sent."""


class Forbidden(PromptswapError):
    """403: the key sent is not the one this route needs."""


class NotFound(PromptswapError):
    """404: unknown task or version."""


class Conflict(PromptswapError):
    """409: the change conflicts with the registry's current state."""


class TooLarge(PromptswapError):
    """413: the upload, or an input plus the prompt's virtual tokens, is too large."""


class InvalidArtifact(PromptswapError):
    """422: the artifact is malformed or does not fit the served model."""


class QueueFull(PromptswapError):
    """429: the server's queue is full; `retry_after` is the seconds it asks to wait, when it says."""

    def __init__(self, status_code: int, error_type: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status_code, error_type, message)
        self.retry_after = retry_after


class Unavailable(PromptswapError):
    """503: the model or the registry is not ready."""


class ServerError(PromptswapError):
    """Any other 5xx."""


class StreamError(PromptswapError):
    """An error inside an event stream that had already started (its status is the stream's, usually 200)."""


BY_STATUS: dict[int, type[PromptswapError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: InvalidArtifact,
    429: QueueFull,
    503: Unavailable,
}


def error_class(status_code: int) -> type[PromptswapError]:
    """The exception class for an error status; statuses the API does not name get the base class."""
    if status_code in BY_STATUS:
        return BY_STATUS[status_code]
    return ServerError if 500 <= status_code < 600 else PromptswapError


def error_fields(body: Any) -> tuple[str, str] | None:
    """(type, message) from a body in the API's error shape, or None when it is not in that shape."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    error_type, message = error.get("type"), error.get("message")
    if not isinstance(error_type, str) or not isinstance(message, str):
        return None
    return error_type, message


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP date); None if absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return seconds_until(value)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def seconds_until(http_date: str) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates come back naive; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def response_error(response: httpx.Response) -> tuple[str, str]:
    """(type, message) of an error response, falling back to its text for bodies not in the API's shape."""
    try:
        text = response.text
    except httpx.ResponseNotRead:  # a streamed response nobody read: say what we can
        text = ""
    try:
        fields = error_fields(response.json()) if text else None
    except ValueError:
        fields = None
    return fields or ("http_error", text.strip() or response.reason_phrase or f"HTTP {response.status_code}")


def raise_for_response(response: httpx.Response) -> None:
    """Raise the typed error for any non-2xx response; do nothing for 2xx. Read a streamed body first."""
    if response.is_success:
        return
    error_type, message = response_error(response)
    status = response.status_code
    cls = error_class(status)
    if cls is QueueFull:
        raise QueueFull(status, error_type, message, retry_after=parse_retry_after(response.headers.get("Retry-After")))
    raise cls(status, error_type, message)
