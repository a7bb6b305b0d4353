"""SIGTERM on a replica: it stops admitting (503, /ready not ready), finishes what it admitted, exits 0.

Requests are held in flight by sending their bodies in two parts: the server admits a request
on its headers and waits for the rest, which the test sends after the signal.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from tests.api.conftest import Site
from tests.deploy.calls import (
    ADMIN,
    FILES,
    IN_FLIGHT,
    NEW_TOKENS,
    Held,
    generate,
    held_generate,
    metric,
    refused,
    upload,
)
from tests.deploy.conftest import compose_redis, replica_environment
from tests.live_server import LiveServer, live_server
from tests.waiting import wait_for

TEXTS = ["The film was", "Awful plot", "Café crème", "A fine day", "numbers 01"]


@dataclass
class Replica:
    server: LiveServer
    redis: redis.Redis

    @property
    def url(self) -> str:
        return self.server.url

    def stored_tasks(self) -> set[str]:
        return {name.decode() for name in self.redis.smembers("promptswap:tasks")}

    def staged_keys(self) -> list[bytes]:
        return list(self.redis.scan_iter("promptswap:staging:*"))


@contextmanager
def replica(site: Site, root: Path, shutdown_timeout: str) -> Iterator[Replica]:
    store = compose_redis(root)
    store.start()
    try:
        env = replica_environment(site.model_dir, store.url, root, PROMPTSWAP_SHUTDOWN_TIMEOUT=shutdown_timeout)
        with live_server(log_dir=root, env=env) as server, redis.Redis.from_url(store.url) as client:
            yield Replica(server, client)
    finally:
        store.stop()


def held_upload(pool: ThreadPoolExecutor, url: str, task: str, folder: Path) -> Held:
    files = {name: (name, (folder / name).read_bytes()) for name in FILES}
    request = httpx.Request("POST", f"{url}/v1/prompts/{task}", files=files, headers=ADMIN)
    return Held(pool, str(request.url), request.read(), {**ADMIN, "content-type": request.headers["content-type"]})


def streamed_tokens(response: httpx.Response) -> list[int]:
    blocks = [b.removeprefix("data: ") for b in response.text.split("\n\n") if b.startswith("data: ")]
    assert blocks[-1] == "[DONE]", "the stream ran to its end"
    events = [json.loads(b) for b in blocks[:-1]]
    assert events[-1]["finish_reason"] in ("length", "eos")
    return [e["token_id"] for e in events if "token_id" in e]


def cut_off(request: Held) -> bool:
    """A request the shutdown ended: told 503 `shutting_down`, or its connection closed while it sent."""
    try:
        return refused(request.result())
    except httpx.TransportError:
        return True


def test_sigterm_finishes_every_admitted_request_and_refuses_new_ones(site: Site, tmp_path: Path) -> None:
    with replica(site, tmp_path, shutdown_timeout="120") as live, ThreadPoolExecutor(8) as pool:
        assert upload(live.url, "talker", site.artifacts["pt"]).status_code == 201
        streams = [held_generate(pool, live.url, "talker", text, stream=True) for text in TEXTS[:3]]
        answers = [held_generate(pool, live.url, "talker", text, stream=False) for text in TEXTS[3:]]
        uploads = [held_upload(pool, live.url, f"incoming-{i}", site.artifacts["prefix"]) for i in range(2)]
        held = [*streams, *answers, *uploads]
        wait_for(lambda: metric(live.url, IN_FLIGHT), lambda n: n == len(held), "every request to be admitted")

        live.server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{live.url}/ready"), refused, "/ready to say the replica is shutting down")
        late = generate(live.url, "talker", "too late")
        assert refused(late) and late.headers["retry-after"] == "1"
        assert refused(upload(live.url, "too-late", site.artifacts["pt"]))
        assert live.server.process.poll() is None, "the replica waits for what it admitted"

        for request in held:
            request.release()
        for request, text in zip(streams, TEXTS[:3], strict=True):
            assert streamed_tokens(request.result()) == site.peft_tokens("pt", text, NEW_TOKENS)
        for request, text in zip(answers, TEXTS[3:], strict=True):
            response = request.result()
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["token_ids"] == site.peft_tokens("pt", text, NEW_TOKENS)
        assert sorted(request.result().status_code for request in uploads) == [201, 201]
        assert live.server.process.wait(timeout=60) == 0

        assert live.stored_tasks() == {"talker", "incoming-0", "incoming-1"}
        assert live.staged_keys() == []


def test_the_shutdown_timeout_bounds_the_wait_and_a_cut_upload_leaves_nothing(site: Site, tmp_path: Path) -> None:
    with replica(site, tmp_path, shutdown_timeout="1") as live, ThreadPoolExecutor(2) as pool:
        stuck = held_upload(pool, live.url, "cut-short", site.artifacts["prefix"])
        wait_for(lambda: metric(live.url, IN_FLIGHT), lambda n: n == 1, "the upload to be admitted")

        live.server.process.send_signal(signal.SIGTERM)
        assert live.server.process.wait(timeout=60) == 0, "exits once the timeout has passed"
        stuck.release()
        assert cut_off(stuck)
        assert "shutdown timeout: ending 1 running request(s)" in live.server.log.read_text()
        assert live.stored_tasks() == set()
        assert live.staged_keys() == []


def test_a_second_signal_stops_at_once(site: Site, tmp_path: Path) -> None:
    with replica(site, tmp_path, shutdown_timeout="600") as live, ThreadPoolExecutor(2) as pool:
        stuck = held_generate(pool, live.url, "talker", "never sent whole", stream=True)
        wait_for(lambda: metric(live.url, IN_FLIGHT), lambda n: n == 1, "the request to be admitted")
        live.server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{live.url}/ready"), refused, "the drain to begin")
        live.server.process.send_signal(signal.SIGINT)
        assert live.server.process.wait(timeout=60) == 0
        stuck.release()
        assert cut_off(stuck)
