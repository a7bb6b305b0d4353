"""Typed errors for requests. Like the registry's errors, each names its HTTP status."""

from __future__ import annotations

from prompt_store.errors import UserError


class InvalidRequest(UserError):
    error_type = "invalid_request"
    status_code = 400


class ContextTooLong(UserError):
    error_type = "context_too_long"
    status_code = 413


class RequestTooLarge(UserError):
    """The request asks for more work than the server allows in one request (HTTP 413)."""

    error_type = "request_too_large"
    status_code = 413


class TooManyRequests(UserError):
    """The client already has as many requests in flight as the server allows one client (HTTP 429)."""

    error_type = "too_many_requests"
    status_code = 429


class Unauthorized(UserError):
    error_type = "unauthorized"
    status_code = 401


class Forbidden(UserError):
    error_type = "forbidden"
    status_code = 403
