"""Typed errors for requests. Like the registry's errors, each names its type; `server/api/errors.py` gives
the HTTP status."""

from __future__ import annotations

from prompt_store.errors import UserError


class InvalidRequest(UserError):
    error_type = "invalid_request"


class ContextTooLong(UserError):
    error_type = "context_too_long"


class RequestTooLarge(UserError):
    """The request asks for more work than the server allows in one request."""

    error_type = "request_too_large"


class TooManyRequests(UserError):
    """The client already has as many requests in flight as the server allows one client."""

    error_type = "too_many_requests"


class Unauthorized(UserError):
    error_type = "unauthorized"


class Forbidden(UserError):
    error_type = "forbidden"


class NotFound(UserError):
    """A path that names nothing the server has."""

    error_type = "not_found"
