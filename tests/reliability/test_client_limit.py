"""One client cannot hold more than its share: past `--max-client-requests` in flight it gets 429 with
Retry-After, and every other client is served as before (issue 21: one client's 40 unread streams held all
32 batch slots and a 1-token request from someone else waited 98 s).

A request stays in flight, deterministically, while its body is still arriving: each held request here sent
half its body. A client is the configured key it presents, else its address; X-Forwarded-For only counts
with `--trust-forwarded-for`, and then only its last entry (the one the proxy wrote).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Site
from tests.live_server import LiveServer
from tests.reliability.conftest import serve, upload
from tests.reliability.errors import ADMIN, assert_error
from tests.reliability.processes import metric, wait_for
from tests.reliability.rawhttp import HeldRequest

BODY = json.dumps({"task": "pt", "inputs": "held", "parameters": {"max_new_tokens": 1}}).encode()
JSON = {"Content-Type": "application/json"}
OTHER_ADDRESS = "127.0.0.2"


@pytest.fixture(scope="module")
def half_the_batch(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A batch of 4, so by default one client may have 2 requests in flight."""
    root = tmp_path_factory.mktemp("client-limit")
    with serve(site.model_dir, (root / "prompts").as_uri(), root, "--max-batch-size", "4") as live:
        assert upload(live.url, "pt", site.artifacts["pt"]).status_code == 201
        yield live


@pytest.fixture(scope="module")
def behind_a_proxy(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("behind-a-proxy")
    extra = ("--max-client-requests", "2", "--trust-forwarded-for")
    with serve(site.model_dir, (root / "prompts").as_uri(), root, *extra) as live:
        assert upload(live.url, "pt", site.artifacts["pt"]).status_code == 201
        yield live


@contextmanager
def holding(url: str, count: int, headers: dict[str, str] | None = None) -> Iterator[list[HeldRequest]]:
    """`count` requests of one client in flight; their bodies are finished (and answered 200) on leaving."""
    held = [HeldRequest(url, "/v1/generate", {**JSON, **(headers or {})}, BODY, len(BODY) // 2) for _ in range(count)]
    try:
        wait_for(lambda: metric(url, "promptswap_http_requests_in_flight") == count, 60, "the held requests")
        yield held
        for request in held:
            assert request.finish().status == 200
    finally:
        for request in held:
            request.close()
    wait_for(lambda: metric(url, "promptswap_http_requests_in_flight") == 0, 60, "the held requests to end")


def generate(url: str, headers: dict[str, str] | None = None, source: str = "") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(transport=transport, timeout=60) as client:
        return client.post(f"{url}/v1/generate", content=BODY, headers={**JSON, **(headers or {})})


def assert_refused(response: httpx.Response) -> None:
    error = assert_error(response, 429, "too_many_requests")
    assert response.headers["retry-after"] == "1" and "in flight" in error["message"]


def test_a_client_past_its_share_gets_429_and_the_others_are_served(half_the_batch: LiveServer) -> None:
    url = half_the_batch.url
    with holding(url, 2):
        assert_refused(generate(url))
        assert_refused(generate(url, {"Authorization": "Bearer made-up"}))  # a key that opens nothing is no client
        assert_refused(generate(url, {"X-Forwarded-For": "10.9.8.7"}))  # not trusted here: still this address
        assert generate(url, source=OTHER_ADDRESS).status_code == 200  # another address
        assert generate(url, ADMIN).status_code == 200  # the admin key's holder is a client of its own
        assert httpx.get(f"{url}/ready").status_code == 200 and httpx.get(f"{url}/health").status_code == 200
        assert metric(url, "promptswap_client_limit_refusals_total") == 3
    assert generate(url).status_code == 200  # its requests ended: the client is served again


def test_holders_of_one_key_share_its_share(half_the_batch: LiveServer) -> None:
    url = half_the_batch.url
    with holding(url, 2, ADMIN):
        assert_refused(generate(url, ADMIN, source=OTHER_ADDRESS))
        assert generate(url).status_code == 200  # this address without the key is another client


def test_behind_a_proxy_the_last_forwarded_address_is_the_client(behind_a_proxy: LiveServer) -> None:
    url = behind_a_proxy.url
    with holding(url, 2, {"X-Forwarded-For": "203.0.113.7"}):
        assert_refused(generate(url, {"X-Forwarded-For": "203.0.113.7"}))
        assert_refused(generate(url, {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}))  # a forged first entry
        assert generate(url, {"X-Forwarded-For": "203.0.113.7, 203.0.113.8"}).status_code == 200
        assert generate(url).status_code == 200  # no header: the peer, the proxy itself here


def test_the_limit_is_read_from_the_environment(site: Site, tmp_path: Path) -> None:
    from tests.live_server import live_server

    env = {"PROMPTSWAP_MAX_CLIENT_REQUESTS": "1", "PROMPTSWAP_TRUST_FORWARDED_FOR": "true"}
    args = ("--model", str(site.model_dir), "--store", (tmp_path / "prompts").as_uri())
    with live_server(*args, log_dir=tmp_path, env=env) as live:
        assert upload_open(live.url, site).status_code == 201
        with holding(live.url, 1, {"X-Forwarded-For": "192.0.2.1"}):
            assert_refused(generate(live.url, {"X-Forwarded-For": "192.0.2.1"}))
            assert generate(live.url, {"X-Forwarded-For": "192.0.2.2"}).status_code == 200


def upload_open(url: str, site: Site) -> httpx.Response:
    """An upload to a server without an admin key."""
    folder = site.artifacts["pt"]
    files = {n: (n, (folder / n).read_bytes()) for n in ("adapter_config.json", "adapter_model.safetensors")}
    return httpx.post(f"{url}/v1/prompts/pt", files=files, timeout=60)
