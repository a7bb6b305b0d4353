"""Tokenizing never blocks the event loop, and a text too long to fit is refused without being tokenized.

An 8 MB body used to be tokenized on the event loop: /ready stalled 2.9 s per request. Here the server runs
in this process (over real HTTP, on a real port) with a tokenizer that holds every text carrying a marker
until the test lets it go. While one is held, /ready must answer: it could not if tokenizing ran on the
event loop. No clock is read: the held tokenizer is the condition.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from server.api.app import create_app
from server.cli import load_model
from server.config import ServerConfig
from tests import waiting
from tests.api.conftest import Site
from tests.redis_server import free_port
from tests.reliability.errors import assert_error

MARK = "hold-me"


class HeldTokenizer:
    """The model's tokenizer; a call on a text carrying MARK waits for `release`, noting where it ran."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.held = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)

    def hold(self, text: object) -> None:
        if MARK in str(text):
            self.threads.append(threading.current_thread().name)
            self.held.set()
            if not self.release.wait(120):
                raise TimeoutError("the test never released the tokenizer")

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any:
        self.hold(text)
        return self.tokenizer(text, *args, **kwargs)

    def apply_chat_template(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.hold(messages)
        return self.tokenizer.apply_chat_template(messages, *args, **kwargs)


@dataclass
class InProcess:
    url: str
    tokenizer: HeldTokenizer
    limit: int  # the longest input, in characters, the server tokenizes


@pytest.fixture(scope="module")
def in_process(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    root = tmp_path_factory.mktemp("in-process")
    args = argparse.Namespace(model=str(site.model_dir), device="cpu", dtype="auto")
    base, tokenizer, name = load_model(args)
    held = HeldTokenizer(tokenizer)
    config = ServerConfig(model=str(site.model_dir), store=(root / "prompts").as_uri(), device="cpu")
    app = create_app(config, base, held, name)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-event-loop")
    thread.start()
    try:
        waiting.wait_for(lambda: server.started, bool, "the in-process server to start", timeout=120)
        limit = 256 * max(map(len, tokenizer.get_vocab()))  # the tiny Llama: 256 positions
        yield InProcess(f"http://127.0.0.1:{server.config.port}", held, limit)
    finally:
        held.release.set()
        server.should_exit = True
        thread.join()


ROUTES = {
    "generate": ("/v1/generate", lambda text: {"inputs": ["short", text], "parameters": {"max_new_tokens": 1}}),
    "classify": ("/v1/classify", lambda text: {"inputs": text, "labels": ["yes", "no"]}),
    "completions": ("/v1/completions", lambda text: {"model": MODEL, "prompt": text, "max_tokens": 1}),
    "chat": ("/v1/chat/completions", lambda text: {"model": MODEL, "messages": [{"role": "user", "content": text}],
                                                   "max_tokens": 1}),
}  # fmt: skip
MODEL = "model"  # replaced by the served model's name in the test


@pytest.mark.parametrize("route", list(ROUTES))
def test_ready_answers_while_a_request_is_being_tokenized(in_process: InProcess, site: Site, route: str) -> None:
    held = in_process.tokenizer
    held.held.clear()
    held.release.clear()
    url, payload = request(in_process, site, route, f"{MARK} " + "word " * 20)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, url, json=payload, timeout=180)
        waiting.wait_for(held.held.is_set, bool, "the request to reach the tokenizer", timeout=120)
        ready = httpx.get(f"{in_process.url}/ready", timeout=60)  # the tokenizer is still held
        assert ready.status_code == 200 and not held.release.is_set()
        held.release.set()
        answer = pending.result()
    assert answer.status_code == 200, answer.text
    assert "uvicorn-event-loop" not in held.threads


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_text_too_long_to_fit_is_never_tokenized(in_process: InProcess, site: Site, route: str) -> None:
    held = in_process.tokenizer
    held.held.clear()
    held.release.set()
    url, payload = request(in_process, site, route, MARK + "x" * in_process.limit)
    assert_error(httpx.post(url, json=payload, timeout=60), 413, "context_too_long")
    assert not held.held.is_set()


def request(in_process: InProcess, site: Site, route: str, text: str) -> tuple[str, dict[str, Any]]:
    """The URL and body of `route` carrying `text`, naming the served model where the route wants one."""
    path, body = ROUTES[route]
    payload = body(text)
    if payload.get("model") == MODEL:
        payload["model"] = str(site.model_dir)
    return f"{in_process.url}{path}", payload
