"""Typed errors raised for anything a user sends. Each carries a type (`error_type`) and a message;
which HTTP status a type answers with is decided in one place, `server/api/errors.py`."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Base class: a user-facing problem with a clear message."""

    error_type = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArtifactError(UserError):
    """The artifact is malformed or does not fit the served model."""

    error_type = "invalid_artifact"


class ArtifactMismatch(ArtifactError):
    """One field of the artifact has a value other than the one the served model needs."""

    error_type = "artifact_mismatch"

    def __init__(self, field: str, expected: Any, found: Any, hint: str = "") -> None:
        message = f"{field}: expected {expected}, found {found}"
        if hint:
            message = f"{message} ({hint})"
        super().__init__(message)
        self.field = field
        self.expected = expected
        self.found = found


class UnsupportedMethod(ArtifactError):
    """The artifact's `peft_type` or `task_type` is one promptswap cannot serve on this model."""

    error_type = "unsupported_method"


class PickleRefused(ArtifactError):
    """The weights are a pickle (`adapter_model.bin`); promptswap never unpickles uploads."""

    error_type = "pickle_refused"

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} is a pickle file; promptswap only reads safetensors and never unpickles uploads. "
            "Convert it on a trusted machine: `PeftModel.from_pretrained(base, DIR).save_pretrained(OUT, "
            "safe_serialization=True)` writes adapter_model.safetensors."
        )


class ArtifactTooLarge(UserError):
    """The artifact is larger than the configured limit."""

    error_type = "artifact_too_large"


class RuntimeFormTooLarge(ArtifactTooLarge):
    """The artifact is small, but its runtime form on the device would pass the configured limit."""

    error_type = "runtime_form_too_large"


class InvalidTaskName(UserError):
    error_type = "invalid_task_name"


class InvalidCard(ArtifactError):
    """`card.json` is not a valid task card."""

    error_type = "invalid_card"


class UnknownTask(UserError):
    error_type = "unknown_task"


class UnknownVersion(UserError):
    error_type = "unknown_version"


class Conflict(UserError):
    """A change raced with another one (e.g. the task was deleted during an upload); retry it."""

    error_type = "conflict"


class StoreUnavailable(UserError):
    """The registry backend does not answer."""

    error_type = "registry_unavailable"


class StoreFull(UserError):
    """The registry's disk (or quota) is full; nothing was stored."""

    error_type = "insufficient_storage"
