"""/docs in a real headless browser with no way out to the internet: Swagger UI renders every route."""

from __future__ import annotations

import os
import shutil
import subprocess

import httpx
import pytest

from tests.live_server import LiveServer

ROUTES = ["/v1/generate", "/v1/classify", "/v1/completions", "/v1/chat/completions", "/v1/prompts/{task}"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and not os.environ.get("CI"):
        pytest.skip("no chromium here (`apt-get install chromium`; .ci/run installs it)")
    assert found, "CI installs Debian's chromium (.ci/run)"
    return found


def rendered(url: str) -> str:
    """The page's DOM once its scripts have run, every host but this machine unreachable."""
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=30000",
        "--dump-dom", url,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_docs_render_the_routes_with_no_network(server: LiveServer) -> None:
    page = httpx.get(f"{server.url}/docs", timeout=30).text
    assert "cdn" not in page and "http://" not in page.replace(server.url, "") and "https://" not in page
    dom = rendered(f"{server.url}/docs")
    for route in ROUTES:
        assert f'data-path="{route}"' in dom, route


def test_redoc_renders_offline_too(server: LiveServer) -> None:
    dom = rendered(f"{server.url}/redoc")
    assert "/v1/generate" in dom and "fonts.googleapis" not in dom


def test_only_the_named_assets_are_served(server: LiveServer) -> None:
    css = httpx.get(f"{server.url}/docs/assets/swagger-ui.css", timeout=30)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    for name in ("core.py", "..%2F__init__.py", "nothing.js"):
        missing = httpx.get(f"{server.url}/docs/assets/{name}", timeout=30)
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
