"""Loaded by `st run` (SCHEMATHESIS_HOOKS): every error answer must be API.md's body and leak nothing."""

from __future__ import annotations

import json
import re

import schemathesis

LEAKS = re.compile(r"Traceback|File \"|\.py\b|site-packages|(?<![\w.-])/(?:tmp|home|root|usr|work|var|etc|proc|opt)/")


@schemathesis.check
def api_error_body(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    if response.status_code < 400:
        return
    body = json.loads(response.content)
    error = body.get("error") if isinstance(body, dict) else None
    if set(body) != {"error"} or not isinstance(error, dict) or not error.get("type") or not error.get("message"):
        raise AssertionError(f"{response.status_code} without API.md's error body: {response.content[:300]!r}")
    leak = LEAKS.search(response.content.decode(errors="replace"))
    if leak:
        raise AssertionError(f"the error body leaks {leak.group(0)!r}")
