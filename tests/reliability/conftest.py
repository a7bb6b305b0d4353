"""Live servers on both registry backends, with a way to fingerprint everything each registry holds."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.api.conftest import Site, site  # noqa: F401  (the tiny model and its PEFT artifacts, shared)
from tests.live_server import LiveServer, live_server
from tests.redis_server import RedisServer, redis_server
from tests.reliability.errors import ADMIN, ADMIN_KEY

# CI runs the short variants; PROMPTSWAP_RELIABILITY=full selects the long load test and schemathesis run.
FULL_RUN = os.environ.get("PROMPTSWAP_RELIABILITY") == "full"
UPLOAD_LIMIT_MB = 1
DEVICE_CACHE_MB = 32  # so a runtime form past the default limit (a quarter of it) fits in an upload under 1 MiB


@dataclass
class Backend:
    """A live server on one registry backend, and a fingerprint of every byte that backend stores."""

    name: str
    server: LiveServer
    snapshot: Callable[[], dict[str, str]]
    store_dir: Path | None = None  # the directory store's root; None on Redis

    @property
    def url(self) -> str:
        return self.server.url


def directory_snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root`: path -> sha256 of the bytes (folders: 'dir')."""
    entries = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        entries[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def redis_snapshot(url: str) -> dict[str, str]:
    """Every key with its value and its expiry: sets and sorted sets by their members (their serialized
    order changes as Redis rehashes them on reads), everything else serialized (DUMP: type and bytes)."""
    client = redis.Redis.from_url(url)

    def value(key: bytes) -> str:
        kind = client.type(key)
        if kind == b"set":
            return f"set {sorted(client.smembers(key))}"
        if kind == b"zset":
            return f"zset {client.zrange(key, 0, -1, withscores=True)}"
        return (client.dump(key) or b"").hex()

    try:
        return {key.decode(): f"{value(key)} ttl={client.pttl(key)}" for key in client.scan_iter()}
    finally:
        client.close()


def upload(url: str, task: str, folder: Path, timeout: float = 60) -> httpx.Response:
    parts = {name: (folder / name).read_bytes() for name in ("adapter_config.json", "adapter_model.safetensors")}
    return upload_files(url, task, parts, timeout)


def upload_files(url: str, task: str, parts: dict[str, bytes], timeout: float = 60) -> httpx.Response:
    """POST the multipart upload of `parts` (file name -> bytes) with the admin key."""
    files = {name: (name, data) for name, data in parts.items()}
    return httpx.post(f"{url}/v1/prompts/{task}", files=files, headers=ADMIN, timeout=timeout)


@contextmanager
def serve(model_dir: Path, store: str, log_dir: Path, *extra: str) -> Iterator[LiveServer]:
    args = ("--model", str(model_dir), "--store", store, "--admin-key", ADMIN_KEY)
    limits = ("--max-upload-mb", str(UPLOAD_LIMIT_MB), "--device-cache-mb", str(DEVICE_CACHE_MB))
    with live_server(*args, *limits, *extra, log_dir=log_dir) as live:
        yield live


@pytest.fixture(scope="session")
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session", params=["directory", "redis"])
def backend(
    request: pytest.FixtureRequest,
    site: Site,  # noqa: F811  (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Backend]:
    """promptswap serve on a directory store or on its own redis-server, with task `pt` uploaded."""
    root = tmp_path_factory.mktemp(f"backend-{request.param}")
    if request.param == "directory":
        store = root / "prompts"
        with serve(site.model_dir, store.as_uri(), root) as live:
            assert upload(live.url, "pt", site.artifacts["pt"]).status_code == 201
            yield Backend("directory", live, lambda: directory_snapshot(store), store)
    else:
        redis_process: RedisServer = request.getfixturevalue("own_redis")
        with serve(site.model_dir, redis_process.url, root) as live:
            assert upload(live.url, "pt", site.artifacts["pt"]).status_code == 201
            yield Backend("redis", live, lambda: redis_snapshot(redis_process.url))
