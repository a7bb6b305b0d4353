"""A cap on the requests one client has in flight, streams included: past it, 429 with Retry-After.

One client that opens many streams and never reads them would otherwise hold every batch slot while
the others wait. A client is the configured key it presents (a made-up key opens nothing, so it
cannot make a new client), else its address: the peer's, or with `trust_forwarded_for` the last
X-Forwarded-For entry, the one the proxy in front wrote (earlier entries come from the client and
prove nothing). Everyone holding the same key is one client.

The identity is kept on the request (`client_of`), for whatever else treats clients fairly.
"""

from __future__ import annotations

from collections import Counter

from fastapi import Request
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as MetricCounter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.admission import OPERATIONS
from server.api.auth import bearer_token, configured_keys, key_holder
from server.api.errors import user_error_response
from server.config import ServerConfig
from server.errors import TooManyRequests

CLIENT = "client"  # the key of the identity in the request's state


def client_identity(scope: Scope, keys: dict[str, str | None], trust_forwarded_for: bool) -> str:
    """`key:<holder>` for a request with a configured key, else `address:<ip>`."""
    headers = Headers(scope=scope)
    token = bearer_token(headers)
    holder = key_holder(token, keys) if token is not None else None
    if holder is not None:
        return f"key:{holder}"
    if trust_forwarded_for:
        forwarded = ",".join(headers.getlist("x-forwarded-for")).split(",")[-1].strip()
        if forwarded:
            return f"address:{forwarded}"
    peer = scope.get("client")
    return f"address:{peer[0] if peer else 'unknown'}"


def client_of(request: Request) -> str:
    """The identity `ClientLimit` gave this request (the same on every route)."""
    identity: str = request.state.client
    return identity


class ClientLimit:
    """ASGI middleware: counts each client's requests from arrival to their last byte sent."""

    def __init__(self, app: ASGIApp, config: ServerConfig, metrics: CollectorRegistry) -> None:
        self.app = app
        self.limit = config.client_request_limit
        self.keys = configured_keys(config)
        self.trust_forwarded_for = config.trust_forwarded_for
        self.in_flight: Counter[str] = Counter()
        self.refused = MetricCounter(
            "promptswap_client_limit_refusals", "Requests refused: the client had too many in flight", registry=metrics
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = client_identity(scope, self.keys, self.trust_forwarded_for)
        scope.setdefault("state", {})[CLIENT] = client
        if self.limit == 0 or scope["path"] in OPERATIONS:
            await self.app(scope, receive, send)
            return
        if self.in_flight[client] >= self.limit:
            self.refused.inc()
            error = TooManyRequests(
                f"this client already has {self.in_flight[client]} requests in flight, the most one client may "
                "have; wait for one to finish (read your streams to the end), then retry"
            )
            await user_error_response(error)(scope, receive, send)
            return
        self.in_flight[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[client] -= 1
            if self.in_flight[client] == 0:
                del self.in_flight[client]
