"""Two `promptswap serve` replicas on one real Redis, configured as docker/compose.scale.yaml configures them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import ADMIN_KEY, Site, site  # noqa: F401  (the tiny model and its PEFT artifacts)
from tests.deploy.compose import load_compose, redis_arguments, service_environment
from tests.deploy.stacks import Answers, admin_key, answers, upload, write_artifact
from tests.deploy.tcp_proxy import TcpProxy, tcp_proxy
from tests.live_server import LiveServer, live_server
from tests.redis_server import RedisServer, free_port


def compose_redis(folder: Path) -> RedisServer:
    """redis-server with compose.yaml's persistence options (AOF), so a restart keeps the registry."""
    return RedisServer(free_port(), str(folder), redis_arguments(load_compose("compose.yaml")))


def replica_environment(model_dir: Path, store: str, root: Path, **shell: str) -> dict[str, str]:
    """The replica's environment from compose.scale.yaml, with the shell values compose would read."""
    key_file = root / "admin_key"
    key_file.write_text(ADMIN_KEY + "\n")  # as `docker compose` mounts the secret file
    environment = service_environment(
        load_compose("compose.scale.yaml"), "promptswap", {"PROMPTSWAP_MODEL": str(model_dir), **shell}
    )
    # What Docker provides by name: the Redis service, and the secret's path in the container.
    return {**environment, "PROMPTSWAP_STORE": store, "PROMPTSWAP_ADMIN_KEY_FILE": str(key_file)}


@dataclass
class Cluster:
    redis: RedisServer
    proxy: TcpProxy  # replica B reaches Redis through it, so a test can cut B off alone
    a: LiveServer
    b: LiveServer


@pytest.fixture(scope="package")
def cluster(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:  # noqa: F811
    root = tmp_path_factory.mktemp("cluster")
    redis = compose_redis(root)
    redis.start()
    try:
        with (
            tcp_proxy(redis.port) as proxy,
            live_server(log_dir=root, env=replica_environment(site.model_dir, redis.url, root)) as a,
            live_server(log_dir=root, env=replica_environment(site.model_dir, proxy.url, root)) as b,
        ):
            yield Cluster(redis, proxy, a, b)
    finally:
        redis.stop()


@pytest.fixture(scope="package")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prompt-tuning artifact with its task card, for the default model the CPU image bakes in."""
    return write_artifact(tmp_path_factory.mktemp("artifact"))


@pytest.fixture(scope="package")
def expected(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Answers:
    """What a local `promptswap serve` (the default model, a directory store) answers with the artifact."""
    root = tmp_path_factory.mktemp("local")
    with live_server("--store", (root / "prompts").as_uri(), log_dir=root, env={"HF_HUB_OFFLINE": "1"}) as local:
        upload(local.url, admin_key(), "reviews", artifact)
        return answers(local.url, "reviews")
