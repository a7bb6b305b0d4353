"""Redis killed under load and restarted: tasks on the device keep serving, uploads answer 503 until
Redis is back and then succeed, and the server reconnects (its change events included) by itself."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prompt_store.redis_store import RedisStore
from tests.api.conftest import Site
from tests.live_server import LiveServer
from tests.redis_server import RedisServer
from tests.reliability.conftest import serve, upload
from tests.reliability.errors import assert_error
from tests.reliability.processes import durable_redis, wait_for


class Load:
    """Clients generating for tasks already on the device, in threads, until stopped; counts answers."""

    def __init__(self, url: str, tasks: list[str], clients: int = 6) -> None:
        self.url = url
        self.tasks = tasks
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def _client(self, index: int) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stopping.is_set():
                body = {"task": self.tasks[index % len(self.tasks)], "inputs": f"load {index}",
                        "parameters": {"max_new_tokens": 3}}  # fmt: skip
                response = client.post(f"{self.url}/v1/generate", json=body)
                self.statuses[response.status_code] += 1
                if response.status_code != 200:
                    self.failures.append(response.text[:300])

    def answered(self) -> int:
        return sum(self.statuses.values())


@pytest.fixture
def redis_and_server(site: Site, tmp_path: Path) -> Iterator[tuple[RedisServer, LiveServer]]:
    redis_process = durable_redis(tmp_path)
    redis_process.start()
    try:
        with serve(site.model_dir, redis_process.url, tmp_path) as live:
            yield redis_process, live
    finally:
        redis_process.stop()


def test_redis_killed_under_load_and_restarted(redis_and_server: tuple[RedisServer, LiveServer], site: Site) -> None:
    redis_process, server = redis_and_server
    for task in ("pt", "prefix"):
        assert upload(server.url, task, site.artifacts[task]).status_code == 201
    with Load(server.url, ["pt", "prefix"]) as load:
        wait_for(lambda: load.answered() >= 12, 60, "the load to be served")
        redis_process.kill()
        wait_for(lambda: httpx.get(f"{server.url}/ready").status_code == 503, 30, "/ready to notice")
        refused = upload(server.url, "during-outage", site.artifacts["pt"])
        assert_error(refused, 503, "registry_unavailable")
        served_during_outage = load.answered()
        wait_for(lambda: load.answered() >= served_during_outage + 12, 60, "requests served while Redis is down")
        assert upload(server.url, "pt", site.artifacts["mpt"]).status_code == 503

        redis_process.start()
        wait_for(lambda: upload(server.url, "after-outage", site.artifacts["pt"]).status_code == 201, 60, "an upload")
        assert httpx.get(f"{server.url}/ready").status_code == 200
    assert load.failures == [], load.failures[:3]
    assert load.statuses[200] == load.answered()

    # The server resubscribed to change events: a rollback made by another replica reaches it.
    second = upload(server.url, "pt", site.artifacts["prefix"])
    assert second.status_code == 201 and second.json()["version"] == 2
    asyncio.run(rollback_elsewhere(redis_process.url, "pt", 1))
    wait_for(lambda: generate_version(server.url, "pt") == 1, 30, "the rollback by another replica to arrive")
    assert httpx.get(f"{server.url}/v1/prompts").json()["prompts"]  # the registry lists again


async def rollback_elsewhere(url: str, task: str, version: int) -> None:
    store = RedisStore.from_url(url)
    try:
        await store.rollback(task, version)
    finally:
        await store.close()


def generate_version(url: str, task: str) -> int:
    response = httpx.post(f"{url}/v1/generate", json={"task": task, "inputs": "v", "parameters": {"max_new_tokens": 1}})
    assert response.status_code == 200, response.text
    return int(response.json()["version"])
