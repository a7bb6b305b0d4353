"""Bearer-key checks: the admin key guards registry writes, the optional inference key the rest."""

from __future__ import annotations

import hmac

from fastapi import Request

from server.errors import Forbidden, Unauthorized


def check_key(request: Request, expected: str | None, what: str) -> None:
    """Pass when no key is configured or the request carries it; compare in constant time."""
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(f"{what} needs `Authorization: Bearer <key>`")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Forbidden(f"the key given is not the {what} key")


def require_admin(request: Request) -> None:
    check_key(request, request.app.state.server.config.admin_key, "the prompt registry (writes)")


def require_inference(request: Request) -> None:
    check_key(request, request.app.state.server.config.inference_key, "inference")
