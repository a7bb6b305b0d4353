"""Start `promptswap serve` as a real process on a free port, and wait until it is ready."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.redis_server import free_port


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def live_server(
    *args: str, log_dir: Path, env: dict[str, str] | None = None, timeout: float = 180.0
) -> Iterator[LiveServer]:
    executable = shutil.which("promptswap")
    assert executable, "the promptswap console script is installed with the package"
    port = free_port()
    log = log_dir / f"server-{port}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [executable, "serve", "--port", str(port), "--device", "cpu", *args],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
    server = LiveServer(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"promptswap serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"promptswap serve was not ready in {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()
