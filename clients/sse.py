"""Server-sent events: one parser for the sync and the async client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from clients.errors import StreamError, error_fields


class EventDecoder:
    """Turns the lines of a `text/event-stream` body into event dicts; one parser for sync and async streams."""

    def __init__(self, status_code: int = 200) -> None:
        self.status_code = status_code
        self.done = False
        self._data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        """The event that `line` completes, if any. Sets `done` at `data: [DONE]`; an error event raises."""
        if line.startswith(":"):  # an SSE comment, e.g. a keep-alive
            return None
        if line:
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value.removeprefix(" "))
            return None
        return self._dispatch()

    def close(self) -> None:
        """Call when the body ends: a stream that never said `[DONE]` was cut short, so raise."""
        self._dispatch()
        if not self.done:
            raise StreamError(self.status_code, "incomplete_stream", "the event stream ended before data: [DONE]")

    def _dispatch(self) -> dict[str, Any] | None:
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data.clear()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise StreamError(self.status_code, "invalid_event", f"not a JSON object: {data[:200]!r}")
        fields = error_fields(event)
        if fields is not None:
            raise StreamError(self.status_code, *fields)
        return event


def iter_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a streamed response, up to `data: [DONE]`."""
    decoder = EventDecoder(response.status_code)
    for line in response.iter_lines():
        event = decoder.feed(line)
        if decoder.done:
            return
        if event is not None:
            yield event
    decoder.close()


async def aiter_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """`iter_events` for an async response."""
    decoder = EventDecoder(response.status_code)
    async for line in response.aiter_lines():
        event = decoder.feed(line)
        if decoder.done:
            return
        if event is not None:
            yield event
    decoder.close()
