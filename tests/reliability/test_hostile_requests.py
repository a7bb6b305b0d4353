"""Hostile inference requests (issue 21): each is refused cheaply, before it costs the server what it asks for.

- a classify request whose inputs × labels × verbalizer tokens pass the limit gets 413 before any scoring;
- an input too long for the context, by its templated length alone, gets 413 before it is tokenized;
- task names a client makes up never become metric labels, so /metrics cannot be grown or its labels used up.
"""

from __future__ import annotations

import re

import httpx
import pytest

from server.config import ServerConfig
from tests.api.conftest import Site
from tests.reliability.conftest import Backend, upload_files
from tests.reliability.errors import assert_error

MAX_POSITIONS = 256  # the tiny Llama's context window
CLASSIFY_LIMIT = ServerConfig().max_classify_tokens  # the server runs with its default


def max_input_chars(site: Site) -> int:
    """The documented rule: the context times the longest token of the vocabulary, in characters."""
    return MAX_POSITIONS * max(map(len, site.tokenizer.get_vocab()))


@pytest.mark.parametrize("backend", ["directory"], indirect=True)
def test_classify_work_is_bounded_before_it_runs(backend: Backend, site: Site) -> None:
    labels = [f"label number {i}" for i in range(100)]
    tokens = max(len(site.tokenizer(label, add_special_tokens=False)["input_ids"]) for label in labels)
    assert tokens >= 3  # as in the attack: 16 inputs × 100 labels × 3-token verbalizers took 4 GB
    rows = CLASSIFY_LIMIT // (len(labels) * tokens) + 1
    before = backend.snapshot()
    body = {"task": "pt", "inputs": ["an input"] * rows, "labels": labels}
    error = assert_error(httpx.post(f"{backend.url}/v1/classify", json=body, timeout=60), 413, "request_too_large")
    assert f"{rows} inputs × 100 labels × {tokens} verbalizer tokens" in error["message"]
    assert str(CLASSIFY_LIMIT) in error["message"]
    fits = {"task": "pt", "inputs": ["an input"] * (rows - 1), "labels": labels[: CLASSIFY_LIMIT // (rows * tokens)]}
    answer = httpx.post(f"{backend.url}/v1/classify", json=fits, timeout=300)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["results"]) == rows - 1
    assert backend.snapshot() == before


@pytest.mark.parametrize("backend", ["directory"], indirect=True)
def test_an_input_too_long_for_the_context_is_refused_by_its_length(backend: Backend, site: Site) -> None:
    """The character count is checked first, templated as the task's card says, without building the text."""
    limit = max_input_chars(site)
    for path, body in [
        ("/v1/generate", {"task": "pt", "inputs": ["short", "x" * (limit + 1)]}),
        ("/v1/classify", {"task": "pt", "inputs": "x" * (limit + 1), "labels": ["a", "b"]}),
        ("/v1/completions", {"model": "pt", "prompt": "x" * (limit + 1)}),
        ("/v1/chat/completions", {"model": "pt", "messages": [{"role": "user", "content": "x" * (limit + 1)}]}),
    ]:
        error = assert_error(httpx.post(f"{backend.url}{path}", json=body, timeout=60), 413, "context_too_long")
        assert f"{limit + 1} characters" in error["message"] and str(limit) in error["message"], (path, error)
    card = b'{"template": "' + b"{input} " * 8 + b'"}'
    assert upload_files(backend.url, "eight-copies", {**site_files(site), "card.json": card}).status_code == 201
    text = "y" * (limit // 8 + 1)  # fits alone, not eight times
    answer = httpx.post(f"{backend.url}/v1/generate", json={"task": "eight-copies", "inputs": text}, timeout=60)
    error = assert_error(answer, 413, "context_too_long")
    assert f"{8 * len(text) + 8} characters" in error["message"], error
    short = {"task": "eight-copies", "inputs": "hi", "parameters": {"max_new_tokens": 2}}
    assert httpx.post(f"{backend.url}/v1/generate", json=short, timeout=60).status_code == 200


@pytest.mark.parametrize("backend", ["directory"], indirect=True)
def test_made_up_task_names_never_become_metric_labels(backend: Backend, site: Site) -> None:
    """100 unknown names used to take every per-task label, and 1 MB names grew /metrics for good."""
    huge = "n" * (1 << 20)
    for index in range(4):
        body = {"task": f"{huge}{index}", "inputs": "x"}
        assert_error(httpx.post(f"{backend.url}/v1/generate", json=body, timeout=60), 400, echoed=body["task"])
    for index in range(ServerConfig().max_task_labels + 10):
        assert_error(httpx.post(f"{backend.url}/v1/generate", json={"task": f"ghost-{index}", "inputs": "x"}), 404)
        assert_error(httpx.post(f"{backend.url}/v1/completions", json={"model": f"ghost-c{index}", "prompt": "x"}), 404)
    assert upload_files(backend.url, "arrived-late", site_files(site)).status_code == 201
    body = {"task": "arrived-late", "inputs": "x", "parameters": {"max_new_tokens": 1}}
    assert httpx.post(f"{backend.url}/v1/generate", json=body, timeout=60).status_code == 200
    metrics = httpx.get(f"{backend.url}/metrics").text
    assert 'promptswap_task_requests_total{task="arrived-late"} 1.0' in metrics
    assert "ghost" not in metrics and "nnnnnnnn" not in metrics
    assert len(metrics) < 256 << 10
    assert re.search(r'task="other"', metrics) is None


def site_files(site: Site) -> dict[str, bytes]:
    folder = site.artifacts["pt"]
    return {name: (folder / name).read_bytes() for name in ("adapter_config.json", "adapter_model.safetensors")}
