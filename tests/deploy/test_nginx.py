"""docker/nginx/promptswap.conf in a real nginx in front of the two replicas: a task's upload and
its requests (by URL, JSON body or OpenAI `model`) reach one replica, which has it on its device."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Site
from tests.deploy.calls import ADMIN, FILES, IN_FLIGHT, held_generate, metric, refused
from tests.deploy.compose import DOCKER
from tests.deploy.conftest import Cluster, replica_environment
from tests.live_server import live_server
from tests.redis_server import free_port
from tests.waiting import wait_for

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


@contextmanager
def nginx(folder: Path, replicas: list[str]) -> Iterator[str]:
    """A real nginx with the compose file's site in front of `replicas`; yields its URL."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is not installed (.ci/run installs nginx-light)"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)  # nginx workers may run as another user
    port = free_port()
    config = nginx_config(folder, port, replicas)
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


@pytest.fixture(scope="module")
def balancer(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nginx(tmp_path_factory.mktemp("nginx"), [cluster.a.url, cluster.b.url]) as url:
        yield url


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def upload_tasks(balancer: str, site: Site, prefix: str) -> dict[str, str]:
    """Upload 16 tasks through nginx; which replica took each (16 tasks land on both of two replicas,
    but for a chance of 2 in 65,536 set by where the free ports fall on the hash ring)."""
    files = {name: (name, (site.artifacts["pt"] / name).read_bytes()) for name in FILES}
    home = {}
    for i in range(16):
        uploaded = httpx.post(f"{balancer}/v1/prompts/{prefix}-{i}", files=files, headers=ADMIN, timeout=60)
        assert uploaded.status_code == 201, uploaded.text
        home[f"{prefix}-{i}"] = uploaded.headers[REPLICA]
    assert len(set(home.values())) == 2, "consistent hashing spreads tasks over both replicas"
    return home


def test_a_task_stays_on_the_replica_that_took_its_upload(balancer: str, cluster: Cluster, site: Site) -> None:
    home = upload_tasks(balancer, site, "routed")

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


def test_a_draining_replicas_requests_go_to_the_next_one(cluster: Cluster, site: Site, tmp_path: Path) -> None:
    env = replica_environment(site.model_dir, cluster.redis.url, tmp_path, PROMPTSWAP_SHUTDOWN_TIMEOUT="120")
    with (
        live_server(log_dir=tmp_path, env=env) as leaving,
        nginx(tmp_path / "nginx", [leaving.url, cluster.a.url]) as balancer,
        ThreadPoolExecutor(1) as pool,
    ):
        home = upload_tasks(balancer, site, "handed-over")
        address = leaving.url.removeprefix("http://")
        moving = [task for task, replica in home.items() if replica == address]
        held = held_generate(pool, leaving.url, moving[0], "keeps it draining", stream=False)
        wait_for(lambda: metric(leaving.url, IN_FLIGHT), lambda n: n == 1, "the held request to be admitted")
        leaving.process.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{leaving.url}/ready"), refused, "the drain to begin")

        # A registry change is never sent twice: the draining replica's 503 reaches the client.
        files = {name: (name, (site.artifacts["prefix"] / name).read_bytes()) for name in FILES}  # a real change
        change = f"{balancer}/v1/prompts/{moving[0]}"
        assert refused(httpx.post(change, files=files, headers=ADMIN, timeout=60))

        expected = site.peft_tokens("pt", "The film was", 4)
        other = cluster.a.url.removeprefix("http://")
        routes = []
        for task in moving:
            body = {"task": task, "inputs": "The film was", "parameters": {"max_new_tokens": 4}}
            answer = httpx.post(f"{balancer}/v1/generate", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["token_ids"] == expected
            routes.append(answer.headers[REPLICA])
        # The first went to the draining replica, got 503 and was sent on; nginx then counts the
        # replica as failed for a while and sends the rest straight to the other one.
        assert routes[0] == f"{address}, {other}"
        assert all(route.endswith(other) for route in routes)
        # Once nginx has seen the replica fail, registry changes for its tasks go to the other one too.
        assert httpx.post(change, files=files, headers=ADMIN, timeout=60).status_code == 201

        held.release()
        assert held.result().status_code == 200
        assert leaving.process.wait(timeout=60) == 0
