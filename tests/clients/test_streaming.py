"""The event-stream parser on real response bytes, as httpx hands them to the client (sync and async)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from clients.errors import StreamError
from clients.sse import aiter_events, iter_events

REQUEST = httpx.Request("POST", "http://promptswap.test/v1/generate")
TOKENS = b'data: {"index": 0, "text": " gre", "token_id": 1}\n\ndata: {"index": 0, "text": "at", "token_id": 2}\n\n'
FINAL = b'data: {"index": 0, "finish_reason": "length", "usage": {"completion_tokens": 2}}\n\n'
EXPECTED = [
    {"index": 0, "text": " gre", "token_id": 1},
    {"index": 0, "text": "at", "token_id": 2},
    {"index": 0, "finish_reason": "length", "usage": {"completion_tokens": 2}},
]


def events(body: bytes) -> list[dict[str, Any]]:
    return list(iter_events(httpx.Response(200, content=body, request=REQUEST)))


def async_events(body: bytes) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event async for event in aiter_events(httpx.Response(200, content=body, request=REQUEST))]

    return asyncio.run(collect())


@pytest.mark.parametrize("parse", [events, async_events])
@pytest.mark.parametrize(
    "body",
    [
        TOKENS + FINAL + b"data: [DONE]\n\n",
        (TOKENS + FINAL + b"data: [DONE]\n\n").replace(b"\n", b"\r\n"),
        b": keep-alive\n\n" + TOKENS + b"event: token\nid: 7\n\n" + FINAL + b"data: [DONE]\n\n",
        TOKENS + FINAL + b"data: [DONE]",  # no blank line after [DONE]
        TOKENS + FINAL + b"data: [DONE]\n\ndata: {after done, never read}\n\n",
    ],
)
def test_events_in_order_up_to_done(parse: Any, body: bytes) -> None:
    assert parse(body) == EXPECTED


def test_multi_line_data_is_one_event() -> None:
    assert events(b'data: {"index": 0,\ndata: "text": "a"}\n\ndata: [DONE]\n\n') == [{"index": 0, "text": "a"}]


def test_text_pieces_concatenate_to_the_generated_text() -> None:
    body = 'data: {"index": 0, "text": "caf"}\n\ndata: {"index": 0, "text": ""}\n\ndata: {"index": 0, "text": "é"}\n\n'
    pieces = events(body.encode() + b"data: [DONE]\n\n")
    assert "".join(event["text"] for event in pieces) == "café"


def test_error_event_raises_after_the_events_before_it() -> None:
    body = TOKENS + b'data: {"error": {"type": "unavailable", "message": "the engine stopped"}}\n\ndata: [DONE]\n\n'
    seen: list[dict[str, Any]] = []
    with pytest.raises(StreamError) as caught:
        seen.extend(iter_events(httpx.Response(200, content=body, request=REQUEST)))
    assert seen == EXPECTED[:2]
    assert (caught.value.status_code, caught.value.error_type, caught.value.message) == (
        200,
        "unavailable",
        "the engine stopped",
    )
    with pytest.raises(StreamError):
        async_events(body)


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        (TOKENS + FINAL, "incomplete_stream"),
        (b"", "incomplete_stream"),
        (b"data: {not json}\n\n", "invalid_event"),
        (b"data: [1, 2]\n\n", "invalid_event"),
    ],
)
def test_broken_streams_raise(body: bytes, error_type: str) -> None:
    with pytest.raises(StreamError) as caught:
        events(body)
    assert caught.value.error_type == error_type
