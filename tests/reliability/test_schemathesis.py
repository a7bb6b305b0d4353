"""Schemathesis against the live server's /openapi.json: no 500, and every error is API.md's body.

CI runs a small number of cases per route; PROMPTSWAP_RELIABILITY=full runs at least 1,000.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import Site
from tests.live_server import LiveServer
from tests.reliability.conftest import FULL_RUN, serve, upload
from tests.reliability.errors import ADMIN_KEY

CASES_PER_ROUTE = 1000 if FULL_RUN else 25
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fuzzed(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own: the fuzzer may delete or roll back whatever it finds.

    One worker: schemathesis 4.32.5 with two hit a race in Hypothesis' lambda descriptions (a runtime
    error in the fuzzer, not an answer from the server).
    """
    root = tmp_path_factory.mktemp("schemathesis")
    with serve(site.model_dir, (root / "prompts").as_uri(), root) as live:
        for task in ("pt", "mpt"):
            assert upload(live.url, task, site.artifacts[task]).status_code == 201
        yield live


def test_schemathesis_finds_no_server_error(fuzzed: LiveServer, tmp_path: Path) -> None:
    report = tmp_path / "events.ndjson"
    command = [
        shutil.which("st") or "st", "run", f"{fuzzed.url}/openapi.json",
        "--checks", "not_a_server_error,api_error_body", "--max-examples", str(CASES_PER_ROUTE),
        "--header", f"Authorization: Bearer {ADMIN_KEY}", "--seed", "8", "--workers", "1",
        "--request-timeout", "120", "--report", "ndjson", "--report-ndjson-path", str(report),
    ]  # fmt: skip
    # Run in tmp_path: schemathesis keeps a cache folder in its working directory.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.reliability.schemathesis_hooks", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=3000, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    server_log = fuzzed.log.read_text()
    assert "Traceback" not in server_log and " 500 " not in server_log, server_log[-4000:]
    calls = calls_per_route(report)
    print(f"schemathesis calls per route: {dict(sorted(calls.items()))}")
    with_inputs = [route for route in calls if route.startswith(("POST", "DELETE")) or "{task}" in route]
    assert len(with_inputs) >= 8, calls
    assert min(calls[route] for route in with_inputs) >= CASES_PER_ROUTE, calls


def calls_per_route(report: Path) -> Counter[str]:
    """Requests schemathesis sent, by operation, from its event report."""
    calls: Counter[str] = Counter()
    for line in report.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if finished is not None and "label" in finished["recorder"]:
            calls[finished["recorder"]["label"]] += len(finished["recorder"].get("interactions", {}))
    return calls
