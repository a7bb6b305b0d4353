"""Request and upload size limits: refused with 413 while the body streams, never buffered whole."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import UPLOAD_LIMIT_MB, Backend
from tests.reliability.errors import ADMIN, assert_no_leak
from tests.reliability.rawhttp import send_head_only, stream_until_answered

BOUNDARY = "reliability-boundary"
UPLOAD_BODY_LIMIT = (2 * UPLOAD_LIMIT_MB + 1) << 20  # two artifact files and a card, as the server allows
JSON_BODY_LIMIT = 8 << 20


def multipart_head(field: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{field}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("path", "content_type", "first", "limit"),
    [
        ("/v1/prompts/huge", f"multipart/form-data; boundary={BOUNDARY}", multipart_head("adapter_model.safetensors"),
         UPLOAD_BODY_LIMIT),
        ("/v1/generate", "application/json", b'{"task": "pt", "inputs": "', JSON_BODY_LIMIT),
    ],
    ids=["upload", "json"],
)  # fmt: skip
def test_an_endless_body_is_refused_while_it_streams(
    backend: Backend, path: str, content_type: str, first: bytes, limit: int
) -> None:
    before = backend.snapshot()
    answer = stream_until_answered(backend.url, path, {**ADMIN, "Content-Type": content_type}, first, cap=16 * limit)
    assert answer.status == 413, answer.body[:300]
    assert answer.json()["error"]["type"] == "too_large"
    assert_no_leak(answer.body.decode())
    # The body never ends: the answer came after the limit plus what the sockets buffer, not after "everything".
    assert limit <= answer.bytes_sent < 16 * limit
    assert backend.snapshot() == before


@pytest.mark.parametrize("path", ["/v1/prompts/huge", "/v1/generate", "/v1/completions"])
def test_a_declared_length_past_the_limit_is_refused_before_any_byte(backend: Backend, path: str) -> None:
    headers = {**ADMIN, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(10 << 30)}
    answer = send_head_only(backend.url, path, headers)
    assert answer.status == 413 and answer.json()["error"]["type"] == "too_large"
