"""Graceful shutdown: stop admitting, let the requests already running finish, then stop.

On SIGTERM (or Ctrl-C) a replica keeps its port open but answers every new request with 503
`shutting_down` and `/ready` goes not-ready, so a load balancer moves traffic elsewhere while
the requests it already admitted (streams and uploads included) run to the end. Once none is
left, or `shutdown_timeout` has passed, uvicorn closes the port and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import error_response

log = logging.getLogger(__name__)

# Probes and scrapes are answered while draining: they are how the outside sees the drain.
OPERATIONS = frozenset({"/health", "/ready", "/metrics"})


class Admission:
    """Counts the requests in flight and refuses new ones once draining has begun."""

    def __init__(self) -> None:
        self.running = 0
        self.draining = False

    def drain(self) -> None:
        self.draining = True

    @property
    def is_idle(self) -> bool:
        return self.running == 0


class AdmissionMiddleware:
    """Outermost layer, so a request counts until its last body byte (a whole stream) is sent."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPERATIONS:
            await self.app(scope, receive, send)
            return
        if self.admission.draining:
            refuse = error_response(
                503, "shutting_down", "this replica is shutting down; send the request again (to another replica)",
                headers={"Retry-After": "1", "Connection": "close"},
            )  # fmt: skip
            await refuse(scope, receive, send)
            return
        self.admission.running += 1
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            # The shutdown timeout ran out and uvicorn cancels what still runs: say so, rather
            # than the bare 500 uvicorn would send for a request that never answered.
            if not started:
                message = "this replica shut down before the request finished; send it again"
                await error_response(503, "shutting_down", message)(scope, receive, send)
            raise
        finally:
            self.admission.running -= 1


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain before its own shutdown. A second signal skips the wait."""

    def __init__(self, config: uvicorn.Config, admission: Admission, timeout: float) -> None:
        super().__init__(config)
        self.admission = admission
        self.timeout = timeout
        self.deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only set flags; `on_tick` (every 0.1 s) acts on them. The base
        # class would also re-raise the signal after serving, which turns a clean exit into 143.
        if self.deadline is not None:
            log.warning("%s again: stopping without waiting for running requests", signal.Signals(sig).name)
            self.should_exit = True
            return
        self.deadline = time.monotonic() + self.timeout
        self.admission.drain()
        log.info("%s: draining; new requests get 503 for up to %.0f s", signal.Signals(sig).name, self.timeout)

    async def on_tick(self, counter: int) -> bool:
        if self.deadline is not None:
            if self.admission.is_idle:
                log.info("drained: no request is running")
                return True
            if time.monotonic() > self.deadline:
                log.warning("shutdown timeout: ending %d running request(s)", self.admission.running)
                return True
        return await super().on_tick(counter)
