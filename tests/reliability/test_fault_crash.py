"""`kill -9` of the server while uploads stream in, on both backends: after a restart every listed
version is complete and serves, and every upload that was answered 201 is still there."""

from __future__ import annotations

import signal
import threading
from contextlib import nullcontext
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Site
from tests.redis_server import redis_server
from tests.reliability.conftest import serve, upload
from tests.reliability.processes import wait_for

TASKS = ["crash-a", "crash-b", "crash-c"]
ROUNDS = 2


class Uploaders:
    """Threads uploading in a loop; remember what was acknowledged and how many uploads the kill cut off."""

    def __init__(self, url: str, artifacts: list[Path]) -> None:
        self.url = url
        self.artifacts = artifacts
        self.acknowledged: set[tuple[str, int, str]] = set()  # (task, version, sha256)
        self.cut_off = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(len(TASKS))]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int) -> None:
        while True:
            try:
                response = upload(self.url, TASKS[index], self.artifacts[index % len(self.artifacts)], timeout=30)
            except httpx.ConnectError:
                return  # the server was already gone when this upload started
            except httpx.TransportError:
                with self.lock:
                    self.cut_off += 1  # the server died while this upload was on the wire or being stored
                return
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
                uploaders = Uploaders(live.url, artifacts)
                wait_for(lambda: len(uploaders.acknowledged) >= 2 + round_, 60, "uploads to be acknowledged")
                live.process.send_signal(signal.SIGKILL)
                uploaders.join()
                assert uploaders.cut_off >= 1  # at least one upload was in flight when the server died
                acknowledged |= uploaders.acknowledged
        with serve(site.model_dir, store, tmp_path) as live:
            check_every_listed_version_serves(live.url, acknowledged)


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
