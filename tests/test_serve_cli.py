"""`promptswap serve` as a newcomer meets it: its help, its start-up log, a busy port, limits from flags."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import httpx

from tests.api.conftest import Site, site  # noqa: F401  (the tiny model on disk)
from tests.live_server import live_server


def promptswap(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promptswap")
    assert executable, "the promptswap console script is installed with the package"
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=timeout)


def test_serve_help_names_the_real_default_model_every_default_and_the_variables() -> None:
    result = promptswap("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "SmolLM2-135M-Instruct, a 4-bit GGUF expanded to float32" in text
    for shown in ("--host HOST address to listen on (default: 127.0.0.1; env PROMPTSWAP_HOST)",
                  "--port PORT port to listen on (default: 8000; env PROMPTSWAP_PORT)",
                  "promptswap/prompts; env PROMPTSWAP_STORE)",
                  "PROMPTSWAP_<FLAG>"):  # fmt: skip
        assert shown in text, shown
    for flag in ("max-batch-tokens", "max-prefill-tokens", "max-waiting", "max-body-mb", "max-inputs", "max-labels",
                 "max-task-labels"):  # fmt: skip
        assert f"--{flag}" in text and f"PROMPTSWAP_{flag.upper().replace('-', '_')}" in text, flag


def test_a_busy_port_fails_at_once_and_announces_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = promptswap("serve", "--port", str(port), "--store", (tmp_path / "p").as_uri(), "--model", "/nowhere")
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr, result.stderr
    assert "serving" not in result.stderr + result.stdout


def test_limits_come_from_flags_and_variables_and_the_log_says_where_prompts_live(
    site: Site,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = tmp_path / "prompts"
    args = ("--model", str(site.model_dir), "--store", store.as_uri(), "--max-labels", "1")
    with live_server(*args, log_dir=tmp_path, env={"PROMPTSWAP_MAX_INPUTS": "2"}) as live:
        rows = httpx.post(f"{live.url}/v1/generate", json={"inputs": ["a", "b", "c"]}, timeout=60)
        assert rows.status_code == 400 and "at most 2" in rows.json()["error"]["message"]
        labels = httpx.post(f"{live.url}/v1/classify", json={"inputs": "a", "labels": ["x", "y"]}, timeout=60)
        assert labels.status_code == 400 and "at most 1" in labels.json()["error"]["message"]
        log = live.log.read_text()
    assert f"prompts are stored in {store}" in log
    assert log.index("prompts are stored in") < log.index("serving")
