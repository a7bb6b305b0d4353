"""What operators watch: a real Prometheus scrapes a real server under load with the shipped recording rules,
and the shipped Grafana dashboard asks only for series that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api.conftest import Site, site  # noqa: F401  (the tiny model, shared with the HTTP tests)
from tests.live_server import LiveServer, live_server
from tests.redis_server import free_port
from tests.waiting import wait_for

MONITORING = Path(__file__).parents[2] / "docker" / "monitoring"
RULES = MONITORING / "rules.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "promptswap.json"
SERIES = re.compile(r"\b(promptswap[_:][A-Za-z0-9_:]+)")


@pytest.fixture(scope="module")
def server(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # noqa: F811
    root = tmp_path_factory.mktemp("monitored")
    with live_server("--model", str(site.model_dir), "--store", (root / "prompts").as_uri(), log_dir=root) as live:
        yield live


@pytest.fixture(scope="module")
def prometheus(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping `server` every second, with the shipped rules evaluated every second."""
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is installed by .ci/run (Debian's prometheus package)"
    root = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "promptswap", "static_configs": [{"targets": [server.url.split("//")[1]]}]}],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(root / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(url), bool, "Prometheus to answer", timeout=120)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(prometheus: str, expression: str) -> list[float]:
    """The values of an instant query (NaN results left out)."""
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=10).json()
    assert answer["status"] == "success", answer
    values = [float(item["value"][1]) for item in answer["data"]["result"]]
    return [value for value in values if value == value]


def test_prometheus_reads_time_to_first_token_percentiles_under_load(server: LiveServer, prometheus: str) -> None:
    """Requests keep arriving while Prometheus scrapes; the shipped recording rules then give p50 and p95
    time to first token, and they lie between zero and the longest request a client saw."""
    longest = 0.0
    stop = threading.Event()

    def load() -> None:
        nonlocal longest
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                start = time.perf_counter()
                body = {"inputs": "a story", "parameters": {"max_new_tokens": 6}}
                assert client.post(f"{server.url}/v1/generate", json=body).status_code == 200
                longest = max(longest, time.perf_counter() - start)

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: query(prometheus, 'up{job="promptswap"}'), lambda up: up == [1.0], "a healthy scrape", 120)
        p95 = wait_for(lambda: query(prometheus, "promptswap:time_to_first_token_seconds:p95"), bool, "p95 TTFT", 120)
        p50 = wait_for(lambda: query(prometheus, "promptswap:time_to_first_token_seconds:p50"), bool, "p50 TTFT", 120)
        tokens = wait_for(lambda: query(prometheus, "promptswap:generated_tokens:rate1m"), bool, "token rate", 120)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    # A quantile lies in the bucket of the true value, and buckets grow by at most 2.5x.
    assert 0 < p50[0] <= p95[0] <= max(longest, 0.005) * 2.5
    assert tokens[0] > 0


def exported_series(server: LiveServer) -> set[str]:
    """Every series name a live server exports, once each of its metric kinds has been observed."""
    body = {"inputs": "a story", "parameters": {"max_new_tokens": 3}}
    assert httpx.post(f"{server.url}/v1/generate", json=body, timeout=60).status_code == 200
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_dashboard_query_names_a_series_the_server_exports(server: LiveServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    recorded = {rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    rules_use = {name for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
                 for name in SERIES.findall(rule["expr"])}  # fmt: skip
    exported = exported_series(server)
    used = {
        name for panel in dashboard["panels"] for target in panel["targets"] for name in SERIES.findall(target["expr"])
    }
    assert used, "the dashboard asks for nothing"
    assert used <= exported | recorded, f"not exported: {sorted(used - exported - recorded)}"
    assert rules_use <= exported, f"the rules read series that do not exist: {sorted(rules_use - exported)}"
    assert recorded <= used, f"recording rules no panel shows: {sorted(recorded - used)}"


def test_promtool_accepts_the_shipped_configuration() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package"
    for command in (["check", "rules", str(RULES)], ["check", "config", str(MONITORING / "prometheus.yml")]):
        result = subprocess.run([promtool, *command], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_operations_guide_lists_every_exported_metric(server: LiveServer) -> None:
    def family(series: str) -> str:
        return re.sub(r"_(bucket|sum|count|created|total)$", "", series)

    guide = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    documented = {family(name) for name in re.findall(r"^\| `(promptswap_[a-z_]+)` \|", guide, flags=re.MULTILINE)}
    exported = {family(name) for name in exported_series(server) if name.startswith("promptswap_")}
    assert exported <= documented, f"exported but not in docs/operations.md: {sorted(exported - documented)}"
    assert documented <= exported, f"in docs/operations.md but not exported: {sorted(documented - exported)}"
