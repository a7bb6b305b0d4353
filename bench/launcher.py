"""Start a real `promptswap serve` process on a free port, wait until it is ready, stop it afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def peak_resident_bytes(self) -> int:
        """The process's high-water mark of resident memory (Linux /proc), 0 where unknown."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    model_dir: Path, device: torch.device, folder: Path, max_batch_size: int, threads: int, timeout: float = 300.0
) -> Iterator[Server]:
    """`threads`: torch's CPU threads in the server (OMP_NUM_THREADS); 0 leaves torch's default."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / f"server-{port}.log"
    command = [
        sys.executable, "-m", "server.cli", "serve", "--model", str(model_dir), "--device", str(device),
        "--port", str(port), "--store", f"file://{folder / 'store'}", "--max-batch-size", str(max_batch_size),
        "--log-level", "warning",
        "--max-client-requests", "0",  # the benchmark is one client that fills the batch on purpose
    ]  # fmt: skip
    with open(log, "wb") as output:
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + timeout
        while not ready(server):
            if process.poll() is not None:
                raise RuntimeError(f"promptswap serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"promptswap serve was not ready in {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ready(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
