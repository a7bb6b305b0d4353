"""The outermost layer: a request id for every HTTP request, its access line, and its trace span.

The id is the client's `X-Request-ID` when it is a plausible one (1-128 characters of letters, digits and
`._:-`), else a new one; it comes back in the `X-Request-ID` header and in every error body, and tags every
log line the request causes. With tracing on, the request is one span with the engine's stages as children
(server/tracing.py).
"""

from __future__ import annotations

import re
import time
import uuid

from opentelemetry import trace
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.logs import CURRENT, RequestInfo, access_line

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
HEADER = b"x-request-id"


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == HEADER:
            given = value.decode("latin-1")
            if REQUEST_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp, tracer: trace.Tracer | None = None) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = RequestInfo(request_id(scope), tracer=self.tracer)
        token = CURRENT.set(info)
        status = 500  # what the client sees if the app fails before answering
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", info.id)
            await send(message)

        try:
            if self.tracer is None:
                await self.app(scope, receive, send_with_id)
            else:
                with self.tracer.start_as_current_span(scope["method"], kind=trace.SpanKind.SERVER) as span:
                    await self.app(scope, receive, send_with_id)
                    span.update_name(f"{scope['method']} {route_of(scope)}")
                    span.set_attributes({"http.status_code": status, **span_attributes(info)})
        finally:
            access_line(scope["method"], route_of(scope), status, time.perf_counter() - start, info.fields)
            CURRENT.reset(token)


def route_of(scope: Scope) -> str:
    """The matched route's template (never the raw path: task names stay out of route labels)."""
    route = scope.get("route")
    return getattr(route, "path", "unmatched")


def span_attributes(info: RequestInfo) -> dict[str, str | int | float | bool]:
    return {"promptswap.request_id": info.id, **{f"promptswap.{k}": v for k, v in info.fields.items() if v is not None}}
