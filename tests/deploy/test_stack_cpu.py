"""docker/compose.cpu.yaml run for real: the CPU image and Redis, driven from the host's command line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.deploy.calls import IN_FLIGHT, NEW_TOKENS, held_generate, metric, refused
from tests.deploy.stacks import (
    Answers,
    Stack,
    admin_key,
    answers,
    assert_reachable_only_as_published,
    assert_same_answers,
    docker,
    inspect,
    needs_docker,
    running,
    upload,
)
from tests.deploy.test_shutdown import streamed_tokens
from tests.waiting import wait_for

pytestmark = needs_docker
TASK = "reviews"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running("compose.cpu.yaml", "promptswap-ci-cpu") as stack:
        yield stack


@pytest.fixture(scope="module")
def uploaded(stack: Stack, artifact: Path) -> int:
    """The artifact uploaded with the host's CLI; its version."""
    version: int = upload(stack.url, admin_key(), TASK, artifact)["version"]
    return version


def test_only_the_server_port_is_published_and_on_loopback(stack: Stack) -> None:
    assert_reachable_only_as_published(stack, entry="promptswap")


def test_the_container_answers_as_a_local_server_does(stack: Stack, uploaded: int, expected: Answers) -> None:
    assert_same_answers(answers(stack.url, TASK), expected)


def test_the_prompt_survives_down_and_up(stack: Stack, uploaded: int, expected: Answers) -> None:
    stack.down()  # keeps the named volumes
    print(f"\n== docker: compose.cpu.yaml: up again -> healthy in {stack.up():.0f} s")
    (task,) = httpx.get(f"{stack.url}/v1/prompts", timeout=60).json()["prompts"]
    assert (task["task"], task["current_version"]) == (TASK, uploaded)
    assert_same_answers(answers(stack.url, TASK), expected)


def test_docker_stop_lets_a_running_stream_finish_then_exits_0(stack: Stack, uploaded: int) -> None:
    (container,) = stack.containers("promptswap")
    body = {"task": TASK, "inputs": "A fine day", "parameters": {"max_new_tokens": NEW_TOKENS}}
    alone = httpx.post(f"{stack.url}/v1/generate", json=body, timeout=300).json()["outputs"][0]["token_ids"]
    with ThreadPoolExecutor(2) as pool:
        # The stream is admitted on its headers and runs once its body is whole: released mid-drain.
        stream = held_generate(pool, stack.url, TASK, "A fine day", stream=True)
        wait_for(lambda: metric(stack.url, IN_FLIGHT), lambda n: n == 1, "the stream to be admitted", timeout=120)
        started = time.monotonic()
        stopping = pool.submit(docker, "stop", container)
        wait_for(lambda: httpx.get(f"{stack.url}/ready", timeout=30), refused, "the drain to begin", timeout=120)
        assert inspect(container)["State"]["Running"], "the container waits for the stream"
        stream.release()
        assert streamed_tokens(stream.result()) == alone
        stopping.result(timeout=120)
    state = inspect(container)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    print(f"\n== docker: docker stop with a stream running: exited 0 after {time.monotonic() - started:.1f} s")
