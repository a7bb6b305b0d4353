"""What every refused request must look like: API.md's error body, with nothing of the server's insides."""

from __future__ import annotations

import re

import httpx

ADMIN_KEY = "reliability-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

# A stack trace, a Python source location or an absolute path of this machine must never reach a client.
LEAKS = re.compile(r"Traceback|File \"|\.py\b|site-packages|(?<![\w.-])/(?:tmp|home|root|usr|work|var|etc|proc|opt)/")


def assert_no_leak(text: str, echoed: str | None = None) -> None:
    """`echoed`: what the client itself sent, which an error may quote back."""
    if echoed:
        text = text.replace(echoed, "")
    leak = LEAKS.search(text)
    assert leak is None, f"the answer leaks {leak.group(0)!r}: {text[:500]}"


def assert_error(
    response: httpx.Response, status: int | tuple[int, ...], error_type: str | None = None, echoed: str | None = None
) -> dict:
    """The response is API.md's error: the status, `{"error": {"type", "message"}}`, and no leak."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, f"{response.status_code}: {response.text[:500]}"
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["type"]), error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    if error_type is not None:
        assert error["type"] == error_type, error
    assert_no_leak(f"{error['type']} {error['message']}", echoed)
    return error
