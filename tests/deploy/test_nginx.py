"""docker/nginx/promptswap.conf in a real nginx in front of the two replicas: a task's upload and
its requests (by URL, JSON body or OpenAI `model`) reach one replica, which has it on its device."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Site
from tests.deploy.calls import ADMIN, FILES, metric, wait_for
from tests.deploy.compose import DOCKER
from tests.deploy.conftest import Cluster
from tests.redis_server import free_port

REPLICA = "x-promptswap-replica"
MISSES = "promptswap_device_cache_misses_total"


def nginx_config(folder: Path, port: int, replicas: list[str]) -> Path:
    """The compose file's nginx config, with the replicas and port that Docker would provide."""
    site = (DOCKER / "nginx" / "promptswap.conf").read_text()
    assert "server promptswap:8000;" in site and "listen 80;" in site
    servers = "\n    ".join(f"server {url.removeprefix('http://')};" for url in replicas)
    site = site.replace("server promptswap:8000;", servers).replace("listen 80;", f"listen 127.0.0.1:{port};")
    (folder / "promptswap.conf").write_text(site)
    main = f"""
pid {folder}/nginx.pid;
events {{}}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    include {folder}/promptswap.conf;
}}
"""
    (folder / "nginx.conf").write_text(main)
    return folder / "nginx.conf"


@pytest.fixture(scope="module")
def balancer(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is not installed (.ci/run installs nginx-light)"
    folder = tmp_path_factory.mktemp("nginx")
    folder.chmod(0o777)  # nginx workers may run as another user
    port = free_port()
    config = nginx_config(folder, port, [cluster.a.url, cluster.b.url])
    command = [binary, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([*command, "-g", "daemon off;"])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/nginx-health"), bool, "nginx to listen")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_task_stays_on_the_replica_that_took_its_upload(balancer: str, cluster: Cluster, site: Site) -> None:
    files = {name: (name, (site.artifacts["pt"] / name).read_bytes()) for name in FILES}
    home = {}
    for i in range(16):
        uploaded = httpx.post(f"{balancer}/v1/prompts/routed-{i}", files=files, headers=ADMIN, timeout=60)
        assert uploaded.status_code == 201, uploaded.text
        home[f"routed-{i}"] = uploaded.headers[REPLICA]
    assert len(set(home.values())) == 2, "consistent hashing spreads tasks over both replicas"

    misses = {url: metric(url, MISSES) for url in (cluster.a.url, cluster.b.url)}
    expected = site.peft_tokens("pt", "The film was", 4)
    for task, replica in home.items():
        body = {"task": task, "inputs": "The film was", "parameters": {"max_new_tokens": 4}}
        for _ in range(2):
            answer = httpx.post(f"{balancer}/v1/generate", json=body, timeout=60)
            assert answer.headers[REPLICA] == replica, task
            assert answer.json()["outputs"][0]["token_ids"] == expected
        completion = {"model": task, "prompt": "The film was", "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{balancer}/v1/completions", json=completion, timeout=60).headers[REPLICA] == replica
    after = {url: metric(url, MISSES) for url in (cluster.a.url, cluster.b.url)}
    assert after == misses, "every request found its task on the device of the replica it reached"


def test_streams_pass_through_nginx_whole(balancer: str, cluster: Cluster, site: Site) -> None:
    files = {name: (name, (site.artifacts["prefix"] / name).read_bytes()) for name in FILES}
    assert httpx.post(f"{balancer}/v1/prompts/streamed", files=files, headers=ADMIN, timeout=60).status_code == 201
    body = {"task": "streamed", "inputs": "Awful plot", "parameters": {"max_new_tokens": 12}, "stream": True}
    with httpx.stream("POST", f"{balancer}/v1/generate", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    tokens = [json.loads(e)["token_id"] for e in events[:-1] if "token_id" in json.loads(e)]
    assert tokens == site.peft_tokens("prefix", "Awful plot", 12)
