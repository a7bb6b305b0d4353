"""The one place that knows HTTP statuses: every error becomes API.md's body {"error": {"type", "message"}}.

Domain errors carry a type (their class and `error_type`) and a message; `STATUSES` says which status each
class answers with, the nearest class in its ancestry deciding.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from prompt_store.errors import (
    ArtifactError,
    ArtifactTooLarge,
    Conflict,
    StoreFull,
    StoreUnavailable,
    UnknownTask,
    UnknownVersion,
    UserError,
)
from server.engine.async_engine import EngineFailed
from server.engine.scheduler import QueueFull
from server.errors import ContextTooLong, Forbidden, NotFound, RequestTooLarge, TooManyRequests, Unauthorized
from server.logs import CURRENT

log = logging.getLogger(__name__)

STATUSES: dict[type[UserError], int] = {
    UserError: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    UnknownTask: 404,
    UnknownVersion: 404,
    Conflict: 409,
    ArtifactTooLarge: 413,
    ContextTooLong: 413,
    RequestTooLarge: 413,
    ArtifactError: 422,
    QueueFull: 429,
    TooManyRequests: 429,
    EngineFailed: 503,
    StoreUnavailable: 503,
    StoreFull: 507,
}

HTTP_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              413: "too_large", 415: "unsupported_media_type", 429: "queue_full", 503: "unavailable"}  # fmt: skip


def status_of(error: UserError | type[UserError]) -> int:
    """The status of the nearest class in the error's ancestry that `STATUSES` names."""
    ancestry = (error if isinstance(error, type) else type(error)).__mro__
    return next(STATUSES[cls] for cls in ancestry if cls in STATUSES)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """API.md's error body, with the request's id when it runs inside one (to quote in a bug report)."""
    request = CURRENT.get()
    error = {"type": error_type, "message": message}
    return {"error": error if request is None else {**error, "request_id": request.id}}


def error_response(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(error_type, message), status_code=status, headers=headers)


def user_error_response(error: UserError, status: int | None = None) -> JSONResponse:
    """The error's own status unless `status` overrides it (/ready answers 503 for any registry failure)."""
    status = status_of(error) if status is None else status
    headers = {"Retry-After": "1"} if status == 429 else None
    return error_response(status, error.error_type, error.message, headers)


def validation_message(error: RequestValidationError) -> str:
    """What is wrong with a body, in words that say how to fix it."""
    problems = error.errors()
    if len(problems) == 1 and problems[0]["type"] == "json_invalid":
        return not_json_message(problems[0], error.body)
    if isinstance(error.body, bytes):
        return (
            "the body was not read as JSON: send it with the header `Content-Type: application/json` "
            "(curl: -H 'content-type: application/json')"
        )
    located = (f"{'.'.join(str(part) for part in e['loc'] if part != 'body') or 'body'}: {e['msg']}" for e in problems)
    return "; ".join(located) or "the request body is invalid"


def not_json_message(problem: dict[str, Any], document: Any) -> str:
    """Where and why a body is not JSON: 'line 1, column 37: Expecting ',' delimiter'."""
    position = problem["loc"][-1] if isinstance(problem["loc"][-1], int) else 0
    text = document if isinstance(document, str) else ""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    reason = problem.get("ctx", {}).get("error", "unreadable")
    return f"the body is not valid JSON: {reason} at line {line}, column {column} (character {position})"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UserError)
    async def user_error(_: Request, error: UserError) -> JSONResponse:
        return user_error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, "invalid_request", validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        error_type = HTTP_TYPES.get(error.status_code, "http_error")
        return error_response(error.status_code, error_type, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal_error", "the server failed on this request; it has been logged")
