"""Processes the fault tests kill: a redis-server that keeps its data on disk, and helpers to wait on conditions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests import waiting
from tests.redis_server import RedisServer, free_port


def durable_redis(folder: Path) -> RedisServer:
    """redis-server with an fsync'd append-only file, so a SIGKILL and a restart lose nothing."""
    return RedisServer(free_port(), str(folder), options=["--appendonly", "yes", "--appendfsync", "always"])


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `seconds`."""
    waiting.wait_for(condition, bool, what, timeout=seconds)


def metric(url: str, name: str) -> float:
    """One sample of the server's /metrics, e.g. 'promptswap_batch_size' or 'x_total{reason="cancelled"}'."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[-1])
    return 0.0
