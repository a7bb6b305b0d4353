"""docker/compose.scale.yaml run for real: two replicas on one Redis, behind nginx."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.deploy.stacks import (
    Answers,
    Stack,
    address,
    admin_key,
    answers,
    assert_reachable_only_as_published,
    assert_same_answers,
    docker,
    needs_docker,
    running,
    upload,
)
from tests.waiting import wait_for

pytestmark = needs_docker
REPLICA = "x-promptswap-replica"
TASKS = [f"reviews-{i}" for i in range(6)]  # enough names that the hash ring gives each replica some


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running("compose.scale.yaml", "promptswap-ci-scale") as stack:
        yield stack


@pytest.fixture(scope="module")
def homes(stack: Stack, artifact: Path) -> dict[str, str]:
    """Every task uploaded through nginx with the host's CLI; the replica address nginx sent each to."""
    for task in TASKS:
        assert upload(stack.url, admin_key(), task, artifact)["version"] == 1
    return {task: generated(stack.url, task).headers[REPLICA] for task in TASKS}


def generated(url: str, task: str) -> httpx.Response:
    body = {"task": task, "inputs": "The film was", "parameters": {"max_new_tokens": 4}}
    response = httpx.post(f"{url}/v1/generate", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response


def test_only_nginx_is_published_and_on_loopback(stack: Stack) -> None:
    assert_reachable_only_as_published(stack, entry="nginx")
    assert len(stack.containers("promptswap")) == 2


def test_both_replicas_serve_an_upload_made_through_nginx_alike(
    stack: Stack, homes: dict[str, str], expected: Answers
) -> None:
    assert set(homes.values()) == {address(c).removeprefix("http://") for c in stack.containers("promptswap")}
    for container in stack.containers("promptswap"):
        assert_same_answers(answers(address(container), TASKS[0]), expected)


def test_requests_keep_succeeding_through_nginx_while_a_replica_stops(stack: Stack, homes: dict[str, str]) -> None:
    leaving, staying = stack.containers("promptswap")
    expected = {task: generated(stack.url, task).json()["outputs"][0]["token_ids"] for task in TASKS}
    with ThreadPoolExecutor(1) as pool:
        stopping = pool.submit(docker, "stop", leaving)
        rounds = 0
        while not stopping.done() or rounds < 2:  # during the drain and after the replica is gone
            for task in TASKS:
                assert generated(stack.url, task).json()["outputs"][0]["token_ids"] == expected[task]
            rounds += 1
        stopping.result()
    for task in TASKS:
        assert generated(stack.url, task).headers[REPLICA].endswith(address(staying).removeprefix("http://"))


def test_uploads_resume_once_redis_restarts(stack: Stack, artifact: Path) -> None:
    (redis,) = stack.containers("redis")
    docker("restart", redis)

    def upload_status() -> int:
        files = {
            name: (name, (artifact / name).read_bytes())
            for name in ("adapter_config.json", "adapter_model.safetensors")
        }
        headers = {"Authorization": f"Bearer {admin_key()}"}
        return httpx.post(
            f"{stack.url}/v1/prompts/after-restart", files=files, headers=headers, timeout=300
        ).status_code

    wait_for(upload_status, lambda status: status == 201, "an upload to succeed after Redis restarted", timeout=120)
    listed = {p["task"] for p in httpx.get(f"{stack.url}/v1/prompts", timeout=60).json()["prompts"]}
    assert listed >= {*TASKS, "after-restart"}, "the registry survived the restart (append-only file)"
