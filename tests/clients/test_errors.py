"""`raise_for_response`: every error status becomes the typed exception a caller would catch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from clients.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidArtifact,
    NotFound,
    PromptswapError,
    QueueFull,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    parse_retry_after,
    raise_for_response,
)

REQUEST = httpx.Request("POST", "http://promptswap.test/v1/generate")


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


def response(status: int, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, request=REQUEST, **kwargs)


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (400, "invalid_request", BadRequest),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Forbidden),
        (404, "unknown_task", NotFound),
        (409, "conflict", Conflict),
        (413, "artifact_too_large", TooLarge),
        (422, "artifact_mismatch", InvalidArtifact),
        (429, "queue_full", QueueFull),
        (503, "unavailable", Unavailable),
        (500, "internal_error", ServerError),
        (502, "bad_gateway", ServerError),
        (504, "gateway_timeout", ServerError),
        (405, "method_not_allowed", PromptswapError),
        (418, "teapot", PromptswapError),
    ],
)
def test_error_status_maps_to_its_class_with_type_and_message(
    status: int, error_type: str, cls: type[PromptswapError]
) -> None:
    message = f"what went wrong with {status}"
    with pytest.raises(PromptswapError) as caught:
        raise_for_response(response(status, json=error_body(error_type, message)))
    assert type(caught.value) is cls
    assert (caught.value.status_code, caught.value.error_type, caught.value.message) == (status, error_type, message)
    assert message in str(caught.value)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_success_raises_nothing(status: int) -> None:
    raise_for_response(response(status, json=error_body("not_an_error", "2xx bodies are never read as errors")))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "upstream connect error"}, "upstream connect error"),
        ({"text": "<html><body>Bad Gateway</body></html>\n"}, "<html><body>Bad Gateway</body></html>"),
        ({"json": {"detail": "Not Found"}}, '{"detail":"Not Found"}'),
        ({"json": {"error": "a string, not an object"}}, '{"error":"a string, not an object"}'),
        ({"json": {"error": {"type": 7, "message": "type is not a string"}}}, "type is not a string"),
        ({"json": ["a", "list"]}, '["a","list"]'),
        ({"content": b""}, "Bad Gateway"),
    ],
)
def test_bodies_not_in_the_error_shape_keep_their_text(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ServerError) as caught:
        raise_for_response(response(502, **kwargs))
    assert caught.value.error_type == "http_error"
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({}, None),
    ],
)
def test_queue_full_carries_retry_after(headers: dict[str, str], retry_after: float | None) -> None:
    with pytest.raises(QueueFull) as caught:
        raise_for_response(response(429, json=error_body("queue_full", "try again"), headers=headers))
    assert caught.value.retry_after == retry_after
    assert caught.value.status_code == 429


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = parse_retry_after(later)
    assert seconds is not None and 25 <= seconds <= 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_unread_streamed_response_still_raises() -> None:
    streamed = httpx.Response(503, request=REQUEST, stream=httpx.ByteStream(b"never read"))
    with pytest.raises(Unavailable) as caught:
        raise_for_response(streamed)
    assert caught.value.error_type == "http_error"
