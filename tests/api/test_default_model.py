"""The README's first command: `promptswap serve` with no --model serves the embedded SmolLM2, offline."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from tests.live_server import LiveServer, live_server


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("default")
    # The first start converts the GGUF file (~30 s) into ~/.cache/promptswap; later starts reuse it.
    with live_server("--store", (root / "prompts").as_uri(), log_dir=root, env={"HF_HUB_OFFLINE": "1"}) as live:
        yield live


def test_the_default_model_answers_offline(default_server: LiveServer) -> None:
    models = httpx.get(f"{default_server.url}/v1/models").json()["data"]
    assert models[0]["id"] == "SmolLM2-135M-Instruct"
    body = {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 6}}
    output = httpx.post(f"{default_server.url}/v1/generate", json=body, timeout=120).json()["outputs"][0]
    assert "Paris" in output["text"]  # a real pretrained model, not random weights
    client = OpenAI(base_url=f"{default_server.url}/v1", api_key="unused")
    chat = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.content
