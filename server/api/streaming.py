"""Server-sent events, and merging the event streams of several rows into one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from prompt_store.errors import UserError
from server.api.errors import error_body
from server.engine.async_engine import RequestStream
from server.engine.request import Event, Generation
from server.logs import CURRENT
from server.tracing import add_engine_spans

DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def sse_error(error: UserError) -> str:
    return sse(error_body(error.error_type, error.message))


async def merged(streams: Sequence[RequestStream]) -> AsyncIterator[tuple[int, Event]]:
    """(row index, event) from every stream as they arrive; all streams are cancelled if we stop early."""
    queue: asyncio.Queue[tuple[int, Event | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: RequestStream) -> None:
        try:
            async for event in stream:
                await queue.put((index, event))
            await queue.put((index, None))
        except BaseException as error:
            await queue.put((index, error))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                if item.finish_reason is not None:
                    finished(item)
                yield index, item
    finally:
        for stream in streams:
            if not stream.finished:
                stream.cancel()
        for task in tasks:
            task.cancel()


def finished(event: Event) -> None:
    """A row's last event: its tokens into the access line, its stages in the engine into the trace."""
    info = CURRENT.get()
    if info is None or event.usage is None:
        return
    info.fields["tokens_out"] = info.fields.get("tokens_out", 0) + event.usage.completion_tokens
    if info.tracer is not None and event.timing is not None:
        attributes = {f"promptswap.{k}": v for k, v in info.fields.items() if k in TRACED and v is not None}
        attributes |= {"promptswap.tokens_in": event.usage.prompt_tokens,
                       "promptswap.tokens_out": event.usage.completion_tokens,
                       "promptswap.finish_reason": event.finish_reason or ""}  # fmt: skip
        add_engine_spans(info.tracer, event.timing, attributes)


TRACED = ("task", "version", "peft_type")


async def collect(streams: Sequence[RequestStream]) -> list[Generation]:
    """Every row's whole result, once all have finished."""
    results = [Generation() for _ in streams]
    async for index, event in merged(streams):
        results[index].add(event)
    return results
