"""promptswap's Python client for the HTTP API: `Client`, `AsyncClient` and typed errors (httpx only, no torch)."""

from clients.client import AsyncClient, Client, GenerateOptions
from clients.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidArtifact,
    NotFound,
    PromptswapError,
    QueueFull,
    ServerError,
    StreamError,
    TooLarge,
    Unauthorized,
    Unavailable,
    raise_for_response,
)

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "Forbidden",
    "GenerateOptions",
    "InvalidArtifact",
    "NotFound",
    "PromptswapError",
    "QueueFull",
    "ServerError",
    "StreamError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "raise_for_response",
]
