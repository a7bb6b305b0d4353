"""`kill -9` of the server while uploads stream in, on both backends: after a restart every listed
version is complete and serves, and every upload that was answered 201 is still there.

One upload is certainly cut off by each kill: it sends half its body, the test waits until the server
has it in flight, and the rest is never sent. The looping uploaders may or may not be mid-upload then.
"""

from __future__ import annotations

import itertools
import signal
import threading
from contextlib import nullcontext
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Site
from tests.redis_server import redis_server
from tests.reliability.conftest import serve, upload
from tests.reliability.errors import ADMIN
from tests.reliability.processes import metric, wait_for
from tests.reliability.rawhttp import HeldRequest, multipart_body

TASKS = ["crash-a", "crash-b", "crash-c"]
ROUNDS = 2


class Uploaders:
    """Threads uploading in a loop until the server dies; remember what was acknowledged."""

    def __init__(self, url: str, artifacts: list[Path]) -> None:
        self.url = url
        self.artifacts = artifacts
        self.acknowledged: set[tuple[str, int, str]] = set()  # (task, version, sha256)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(len(TASKS))]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int) -> None:
        # Each upload differs from the one before (the same files again would create nothing, answering 200).
        for turn in itertools.count(index):
            try:
                response = upload(self.url, TASKS[index], self.artifacts[turn % len(self.artifacts)], timeout=30)
            except httpx.TransportError:
                return  # the server died before this upload, or while it was on the wire or being stored
            if response.status_code == 201:
                answer = response.json()
                with self.lock:
                    self.acknowledged.add((answer["task"], answer["version"], answer["sha256"]))

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


@pytest.mark.parametrize("store_kind", ["directory", "redis"])
def test_kill_9_in_the_middle_of_uploads(store_kind: str, site: Site, tmp_path: Path) -> None:
    artifacts = [site.artifacts[name] for name in ("pt", "prefix", "mpt", "lstm")]
    with redis_server() if store_kind == "redis" else nullcontext() as redis_process:
        store = redis_process.url if redis_process else (tmp_path / "prompts").as_uri()
        acknowledged: set[tuple[str, int, str]] = set()
        for round_ in range(ROUNDS):
            with serve(site.model_dir, store, tmp_path) as live:
                check_every_listed_version_serves(live.url, acknowledged)
                held = held_upload(live.url, TASKS[round_ % len(TASKS)], artifacts[0])
                wait_for(lambda: metric(live.url, IN_FLIGHT) == 1, 60, "the server to be receiving the held upload")
                uploaders = Uploaders(live.url, artifacts)
                wait_for(lambda: len(uploaders.acknowledged) >= 2 + round_, 60, "uploads to be acknowledged")
                live.process.send_signal(signal.SIGKILL)
                uploaders.join()
                with pytest.raises(OSError):  # the held upload was in flight when the server died
                    held.finish()
                acknowledged |= uploaders.acknowledged
        with serve(site.model_dir, store, tmp_path) as live:
            check_every_listed_version_serves(live.url, acknowledged)


IN_FLIGHT = "promptswap_http_requests_in_flight"
BOUNDARY = "crash-boundary"


def held_upload(url: str, task: str, folder: Path) -> HeldRequest:
    """An upload that has sent half its body, and sends the rest only when asked."""
    parts = {name: (folder / name).read_bytes() for name in ("adapter_config.json", "adapter_model.safetensors")}
    body = multipart_body(parts, BOUNDARY)
    headers = {**ADMIN, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return HeldRequest(url, f"/v1/prompts/{task}", headers, body, len(body) // 2)


def check_every_listed_version_serves(url: str, acknowledged: set[tuple[str, int, str]]) -> None:
    listed: set[tuple[str, int, str]] = set()
    for prompt in httpx.get(f"{url}/v1/prompts", timeout=30).json()["prompts"]:
        shown = httpx.get(f"{url}/v1/prompts/{prompt['task']}", timeout=30).json()
        for version in shown["versions"]:
            listed.add((prompt["task"], version["version"], version["sha256"]))
            body = {"task": prompt["task"], "version": version["version"], "inputs": "after the crash",
                    "parameters": {"max_new_tokens": 2}}  # fmt: skip
            response = httpx.post(f"{url}/v1/generate", json=body, timeout=60)
            assert response.status_code == 200, (prompt["task"], version["version"], response.text)
    assert acknowledged <= listed, acknowledged - listed
