"""Read what the compose files and Dockerfiles tell a container to run, so tests run the same thing here."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE_FILES = sorted(DOCKER.glob("compose*.yaml"))
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


def load_compose(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DOCKER / name).read_text())
    return document


def interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's `${NAME:-default}`: the shell's value when set and not empty, else the default."""
    return INTERPOLATION.sub(lambda m: shell.get(m["name"]) or (m["default"] or ""), value)


def service_environment(compose: dict[str, Any], service: str, shell: dict[str, str]) -> dict[str, str]:
    environment = compose["services"][service].get("environment", {})
    return {name: interpolate(str(value), shell) for name, value in environment.items()}


def redis_arguments(compose: dict[str, Any]) -> list[str]:
    """The compose Redis command's options (persistence settings), without the program name."""
    command: list[str] = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    return command[1:]


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile that say what its container runs."""

    env: dict[str, str] = field(default_factory=dict)
    copies: dict[str, Path] = field(default_factory=dict)  # path in the image -> file in this repository
    runs: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)


def read_dockerfile(name: str) -> Dockerfile:
    text = re.sub(r"\\\n\s*", " ", (DOCKER / name).read_text())  # join continued lines
    parsed = Dockerfile()
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENV":
            parsed.env.update(pair.split("=", 1) for pair in shlex.split(rest))  # type: ignore[misc]
        elif instruction == "COPY" and len(rest.split()) == 2:
            source, target = rest.split()
            parsed.copies[target] = DOCKER.parent / source
        elif instruction == "RUN":
            parsed.runs.append(rest)
        elif instruction == "ENTRYPOINT":
            parsed.entrypoint = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            parsed.healthcheck = json.loads(rest.split(" CMD ", 1)[1])
    return parsed
