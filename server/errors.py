"""Typed errors for requests. Like the registry's errors, each names its HTTP status."""

from __future__ import annotations

from prompt_store.errors import UserError


class InvalidRequest(UserError):
    error_type = "invalid_request"
    status_code = 400


class ContextTooLong(UserError):
    error_type = "context_too_long"
    status_code = 413


class Unauthorized(UserError):
    error_type = "unauthorized"
    status_code = 401


class Forbidden(UserError):
    error_type = "forbidden"
    status_code = 403
