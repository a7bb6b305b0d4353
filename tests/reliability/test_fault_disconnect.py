"""A client that disconnects mid-stream frees its batch slot at the next engine step."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import Site
from tests.live_server import LiveServer
from tests.reliability.conftest import serve, upload
from tests.reliability.processes import metric, wait_for

# A stream this long cannot end by itself while the test waits for the disconnect to be noticed, however
# busy the machine: at a few milliseconds a token it runs for many seconds.
MAX_NEW_TOKENS = 4000


@pytest.fixture(scope="module")
def long_server(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The tiny model, told it takes 4,096 + 100 positions (its rotary positions are computed, not stored)."""
    root = tmp_path_factory.mktemp("disconnect")
    model_dir = root / "model"
    shutil.copytree(site.model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": MAX_NEW_TOKENS + 200}))
    with serve(model_dir, (root / "prompts").as_uri(), root) as live:
        assert upload(live.url, "pt", site.artifacts["pt"]).status_code == 201
        yield live


def test_a_client_leaving_mid_stream_frees_its_slot(long_server: LiveServer) -> None:
    backend = long_server
    cancelled = 'promptswap_requests_finished_total{reason="cancelled"}'
    cancelled_before = metric(backend.url, cancelled)
    tokens_before = metric(backend.url, "promptswap_generated_tokens_total")
    body = {"task": "pt", "inputs": "a long story", "stream": True, "parameters": {"max_new_tokens": MAX_NEW_TOKENS}}
    with httpx.stream("POST", f"{backend.url}/v1/generate", json=body, timeout=60) as response:
        assert response.status_code == 200
        events = 0
        for line in response.iter_lines():
            if line.startswith("data: {"):
                assert "token_id" in json.loads(line.removeprefix("data: "))
                events += 1
            if events == 3:
                break  # leaving the block closes the connection mid-stream
    assert metric(backend.url, "promptswap_batch_size") <= 1
    wait_for(lambda: metric(backend.url, cancelled) == cancelled_before + 1, 30, "the row to be cancelled")
    wait_for(lambda: metric(backend.url, "promptswap_batch_size") == 0, 30, "the batch slot to be freed")
    generated = metric(backend.url, "promptswap_generated_tokens_total") - tokens_before
    assert 3 <= generated < MAX_NEW_TOKENS  # it stopped early, not at its token budget
    again = httpx.post(
        f"{backend.url}/v1/generate", json={"task": "pt", "inputs": "next", "parameters": {"max_new_tokens": 2}}
    )
    assert again.status_code == 200
