"""What the deployment tests do over HTTP: upload, generate, read a metric, wait for a condition."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.api.conftest import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
NEW_TOKENS = 8
IN_FLIGHT = "promptswap_http_requests_in_flight"
FILES = ("adapter_config.json", "adapter_model.safetensors")


def upload(url: str, task: str, folder: Path) -> httpx.Response:
    files = {name: (name, (folder / name).read_bytes()) for name in FILES}
    return httpx.post(f"{url}/v1/prompts/{task}", files=files, headers=ADMIN, timeout=60)


def generate(url: str, task: str | None, text: str, max_new_tokens: int = 4) -> httpx.Response:
    body = {"task": task, "inputs": text, "parameters": {"max_new_tokens": max_new_tokens}}
    return httpx.post(f"{url}/v1/generate", json=body, timeout=60)


def served(url: str, task: str, text: str, max_new_tokens: int = 4) -> tuple[int | None, list[int] | None]:
    """(version, token ids) a replica answers with, or (None, None) when it does not know the task."""
    response = generate(url, task, text, max_new_tokens)
    if response.status_code == 404:
        return None, None
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["version"], answer["outputs"][0]["token_ids"]


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} is not in {url}/metrics"
    return float(found[1])


def refused(response: httpx.Response) -> bool:
    """A draining replica's answer: 503 `shutting_down`."""
    return response.status_code == 503 and response.json()["error"]["type"] == "shutting_down"


class Held:
    """A POST whose body's second half waits for `release()`; `result()` is its response (or error)."""

    def __init__(self, pool: ThreadPoolExecutor, url: str, body: bytes, headers: dict[str, str]) -> None:
        self.gate = threading.Event()
        self.future: Future[httpx.Response] = pool.submit(self._send, url, body, headers)

    def _send(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        def parts() -> Iterator[bytes]:
            yield body[: len(body) // 2]
            self.gate.wait(timeout=120)
            yield body[len(body) // 2 :]

        return httpx.post(url, content=parts(), headers=headers, timeout=120)

    def release(self) -> None:
        self.gate.set()

    def result(self) -> httpx.Response:
        return self.future.result(timeout=120)


def held_generate(pool: ThreadPoolExecutor, url: str, task: str, text: str, stream: bool) -> Held:
    body = {"task": task, "inputs": text, "parameters": {"max_new_tokens": NEW_TOKENS}, "stream": stream}
    return Held(pool, f"{url}/v1/generate", json.dumps(body).encode(), {"content-type": "application/json"})
