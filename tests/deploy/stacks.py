"""The compose stacks run for real: a Docker engine, the images docker/ci.sh built, docker-compose.

Only docker/ci.sh runs these tests (it sets PROMPTSWAP_STACK_TESTS=1 once the images exist); the
compose variables that name the images come from its environment, so stand-in base images and
official ones are tested alike.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import torch
from safetensors.torch import save_file

from tests.deploy.compose import DOCKER
from tests.redis_server import free_port

needs_docker = pytest.mark.skipif(
    not os.environ.get("PROMPTSWAP_STACK_TESTS"), reason="docker/ci.sh runs the compose stacks (a Docker engine)"
)

# The embedded default model's shape (SmolLM2-135M-Instruct), which the CPU image bakes in.
HIDDEN_SIZE = 576
CARD = {"template": "Review: {input}\nSentiment:", "labels": {"positive": " positive", "negative": " negative"}}
INPUTS = ["The film was a delight from start to end", "Two hours I will never get back"]


def compose_command() -> list[str]:
    """Compose v1 (Debian's docker-compose 1.29) where it is installed, else the v2 plugin."""
    return ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]


def docker(*args: str, timeout: float = 300) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def inspect(container: str) -> dict[str, Any]:
    details: dict[str, Any] = json.loads(docker("inspect", container))[0]
    return details


def address(container: str) -> str:
    """The container's URL on its stack's network, which this host reaches too."""
    (network,) = inspect(container)["NetworkSettings"]["Networks"].values()
    return f"http://{network['IPAddress']}:8000"


@dataclass
class Stack:
    """One compose file, brought up under its own project name with the port on a free loopback port."""

    file: str
    project: str
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 600) -> str:
        command = [*compose_command(), "--project-name", self.project, "--file", str(DOCKER / self.file), *args]
        env = {**os.environ, "PROMPTSWAP_PUBLISH": f"127.0.0.1:{self.port}"}
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def up(self) -> float:
        """`up -d` with the images already built, then wait until every container is healthy: seconds taken."""
        started = time.monotonic()
        self.compose("up", "--detach", "--no-build")
        self.wait_healthy()
        return time.monotonic() - started

    def down(self, *args: str) -> None:
        self.compose("down", *args)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "--quiet", service).split()

    def all_containers(self) -> list[str]:
        return docker("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={self.project}").split()

    def wait_healthy(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while True:
            details = [inspect(c) for c in self.all_containers()]
            states = {d["Name"]: d["State"] for d in details}
            if states and all(s.get("Health", {}).get("Status") == "healthy" for s in states.values()):
                return
            crashed = [d["Name"] for d in details if d["RestartCount"] or d["State"]["Status"] == "exited"]
            assert not crashed, f"{self.file}: {crashed} exited:\n{self.logs()}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.file}: not healthy in {timeout} s: {states}\n{self.logs()}")
            time.sleep(1)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "50")


@contextmanager
def running(file: str, project: str) -> Iterator[Stack]:
    """The stack up and healthy (the time it took printed), then down with its volumes."""
    admin_key()  # the compose files' secret must exist
    stack = Stack(file, project)
    try:
        print(f"\n== docker: {file}: up -> healthy in {stack.up():.0f} s")
        yield stack
    finally:
        stack.down("--volumes")


def admin_key() -> str:
    """The key in docker/admin_key.txt, the compose files' secret; written when the file is missing."""
    key_file = DOCKER / "admin_key.txt"
    if not key_file.exists():
        key_file.write_text(os.urandom(16).hex())
    return key_file.read_text().strip()


def write_artifact(folder: Path, num_virtual_tokens: int = 8, seed: int = 0) -> Path:
    """A PEFT prompt-tuning artifact for the default model, with a task card, as save_pretrained writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": num_virtual_tokens,
        "num_transformer_submodules": 1,
        "token_dim": HIDDEN_SIZE,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(seed)
    # prompt_embeddings: [N, D]
    embeddings = torch.randn(num_virtual_tokens, HIDDEN_SIZE, generator=generator) * 0.05
    save_file({"prompt_embeddings": embeddings}, str(folder / "adapter_model.safetensors"))
    (folder / "card.json").write_text(json.dumps(CARD))
    return folder


def cli(*args: str) -> str:
    """The promptswap command line on this host."""
    executable = shutil.which("promptswap")
    assert executable, "the promptswap console script is installed with the package"
    result = subprocess.run([executable, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"promptswap {' '.join(args)}: {result.stderr}"
    return result.stdout


def upload(url: str, key: str, task: str, folder: Path) -> dict[str, Any]:
    answer = cli(
        "prompts",
        "upload",
        "--url",
        url,
        "--api-key",
        key,
        "--task",
        task,
        "--card",
        str(folder / "card.json"),
        str(folder),
    )
    uploaded: dict[str, Any] = json.loads(answer)
    return uploaded


class Answers(NamedTuple):
    """What a server answers for INPUTS."""

    lines: str  # `promptswap generate` output
    tokens: list[list[int]]  # the generated token ids, one list per input
    classified: dict[str, Any]  # `promptswap classify` output


def answers(url: str, task: str) -> Answers:
    lines = cli("generate", "--url", url, "--task", task, "--max-new-tokens", "12", *INPUTS)
    body = {"task": task, "inputs": INPUTS, "parameters": {"max_new_tokens": 12}}
    response = httpx.post(f"{url}/v1/generate", json=body, timeout=300)
    assert response.status_code == 200, response.text
    tokens = [output["token_ids"] for output in response.json()["outputs"]]
    classified = json.loads(cli("classify", "--url", url, "--task", task, *INPUTS))
    return Answers(lines, tokens, classified)


def assert_same_answers(found: Answers, expected: Answers) -> None:
    """Identical greedy tokens and labels; probabilities equal but for float rounding (thread counts differ)."""
    assert (found.lines, found.tokens) == (expected.lines, expected.tokens)
    for result, wanted in zip(found.classified["results"], expected.classified["results"], strict=True):
        assert result["label"] == wanted["label"]
        assert result["scores"] == pytest.approx(wanted["scores"], abs=1e-4)


def assert_reachable_only_as_published(stack: Stack, entry: str) -> None:
    """Only `entry` publishes a port, on 127.0.0.1; every container is on the stack's own network alone."""
    for container in stack.all_containers():
        details = inspect(container)
        service = details["Config"]["Labels"]["com.docker.compose.service"]
        bindings = [b for port in (details["HostConfig"]["PortBindings"] or {}).values() for b in port]
        if service == entry:
            assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
        else:
            assert bindings == [], f"{service} publishes {bindings}"
        assert set(details["NetworkSettings"]["Networks"]) == {f"{stack.project}_default"}, service
