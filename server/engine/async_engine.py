"""The continuously batched engine behind the server: an `EngineCore` stepping in its own thread.

`submit` checks and queues a request at once (raising a typed error when it cannot be served
or the queue is full) and returns a `RequestStream` of its events. The thread steps the core
while there is work and sleeps otherwise, so model passes never block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from prompt_store.errors import UserError
from server.engine.core import EngineCore
from server.engine.request import Event, Generation, Request
from server.errors import InvalidRequest

log = logging.getLogger(__name__)
T = TypeVar("T")


class EngineFailed(UserError):
    """The model pass failed; the request was ended."""

    error_type = "engine_error"


class RequestStream:
    """The events of one request: one per generated token, then one with the finish reason."""

    def __init__(self, engine: AsyncEngine, request_id: int) -> None:
        self.engine = engine
        self.request_id = request_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.finished = False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        try:
            while not self.finished:
                event = await self.queue.get()
                if event.finish_reason is not None:
                    self.finished = True
                    if event.finish_reason == "error":
                        raise EngineFailed("the model failed while running this request; retry it")
                yield event
        finally:
            if not self.finished:  # the consumer went away: free the row at the next step
                self.cancel()

    def cancel(self) -> None:
        self.engine.cancel(self.request_id)

    async def result(self) -> Generation:
        generation = Generation()
        async for event in self:
            generation.add(event)
        return generation


class AsyncEngine:
    def __init__(self, core: EngineCore | None) -> None:
        """`core`: None for a model that does not generate (an encoder classifier runs jobs only)."""
        self.core = core
        self.streams: dict[int, RequestStream] = {}
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = deque()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="promptswap-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    @property
    def has_work(self) -> bool:
        return self.core is not None and self.core.has_work

    def submit(self, request: Request) -> RequestStream:
        if self.core is None:
            raise InvalidRequest("this model does not generate; use /v1/classify")
        request_id = self.core.add(request)
        stream = RequestStream(self, request_id)
        self.streams[request_id] = stream
        self._notify()
        return stream

    async def run(self, job: Callable[[], T]) -> T:
        """Run `job` (a model pass outside generation, e.g. classification) in the engine thread
        between two steps, so model passes never compete for the device."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._wake:
            self._jobs.append((job, future))
            self._wake.notify()
        return await future

    def cancel(self, request_id: int) -> None:
        if self.core is not None:
            self.core.cancel(request_id)
        self._notify()

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self.has_work and not self._jobs and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                jobs = list(self._jobs)
                self._jobs.clear()
            for job, future in jobs:
                self._run_job(job, future)
            if self.core is None or not self.core.has_work:
                continue
            try:
                events = self.core.step()
            except Exception:
                log.exception("engine step failed; ending the running requests")
                events = self.core.abort("error")
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._deliver, events)

    def _run_job(self, job: Callable[[], Any], future: asyncio.Future[Any]) -> None:
        assert self._loop is not None
        try:
            result = job()
        except BaseException as error:  # handed to the awaiting caller
            self._loop.call_soon_threadsafe(_settle, future, None, error)
        else:
            self._loop.call_soon_threadsafe(_settle, future, result, None)

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            stream = self.streams.get(event.request_id)
            if stream is None:
                continue
            stream.queue.put_nowait(event)
            if event.finish_reason is not None:
                del self.streams[event.request_id]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
