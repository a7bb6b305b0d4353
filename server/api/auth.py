"""Bearer keys. The admin key guards registry writes. The optional inference key guards everything a
client reads: inference, the prompt catalogue, the OpenAPI schema and docs, and (unless
`--public-metrics`) /metrics; the admin key opens those too. /health and /ready are always open.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request
from starlette.datastructures import Headers

from server.config import ServerConfig
from server.errors import Forbidden, Unauthorized


def bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_holder(token: str, keys: Mapping[str, str | None]) -> str | None:
    """Which configured key `token` is ("admin", "inference"), compared in constant time with every key."""
    matches = [holder for holder, key in keys.items() if key is not None and _same(token, key)]
    return matches[0] if matches else None


def _same(token: str, key: str) -> bool:
    return hmac.compare_digest(token.encode(), key.encode())


def configured_keys(config: ServerConfig) -> dict[str, str | None]:
    return {"admin": config.admin_key, "inference": config.inference_key}


def check_key(request: Request, accepted: Mapping[str, str | None], needs: str) -> None:
    """Pass when none of the `accepted` keys is configured or the request carries one of them."""
    if all(key is None for key in accepted.values()):
        return
    token = bearer_token(request.headers)
    if token is None:
        raise Unauthorized(f"{needs}: send `Authorization: Bearer <key>`")
    if key_holder(token, accepted) is None:
        raise Forbidden(f"the key given does not open this route ({needs})")


def require_admin(request: Request) -> None:
    config: ServerConfig = request.app.state.server.config
    check_key(request, {"admin": config.admin_key}, "registry changes need the admin key")


def require_reader(request: Request) -> None:
    """Inference and reads of what the server holds: open unless an inference key is set."""
    config: ServerConfig = request.app.state.server.config
    if config.inference_key is not None:
        check_key(request, configured_keys(config), "this route needs the inference key or the admin key")


def require_metrics_reader(request: Request) -> None:
    if not request.app.state.server.config.public_metrics:
        require_reader(request)
