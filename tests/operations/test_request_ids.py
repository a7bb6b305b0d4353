"""Request ids, access lines and traces: what an operator follows a request by.

A real server logging JSON lines: the client's X-Request-ID comes back and tags the request's access line
and its error body; a made-up or missing one is replaced; no key and (by default) no input ever reaches a
log line. In process, with the SDK's in-memory exporter: a streamed request is one span whose children are
its queue wait, prefill and decode in the engine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from server.api.app import create_app
from server.config import ServerConfig
from server.engine.model import wrap_model
from tests.api.conftest import ADMIN_KEY, Site, site  # noqa: F401  (the tiny model, shared)
from tests.live_server import LiveServer, live_server
from tests.waiting import wait_for

SECRET_INPUT = "my-very-private-review-text"


def upload(url: str, task: str, folder: Path) -> httpx.Response:
    files = {
        name: (name, (folder / name).read_bytes()) for name in ("adapter_config.json", "adapter_model.safetensors")
    }
    return httpx.post(f"{url}/v1/prompts/{task}", files=files, headers={"Authorization": f"Bearer {ADMIN_KEY}"})


@pytest.fixture(scope="module")
def json_server(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # noqa: F811
    root = tmp_path_factory.mktemp("json-logs")
    args = ("--model", str(site.model_dir), "--store", (root / "prompts").as_uri(), "--admin-key", ADMIN_KEY)
    with live_server(*args, "--log-format", "json", log_dir=root) as live:
        assert upload(live.url, "pt", site.artifacts["pt"]).status_code == 201
        yield live


def log_lines(server: LiveServer) -> list[dict]:
    """Every line the server wrote, each a JSON object (a line that is not one fails the test)."""
    return [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]


def test_a_request_id_comes_back_and_tags_its_access_line(json_server: LiveServer) -> None:
    body = {"task": "pt", "inputs": SECRET_INPUT, "parameters": {"max_new_tokens": 3}}
    answer = httpx.post(f"{json_server.url}/v1/generate", json=body, headers={"X-Request-ID": "req-42.a"}, timeout=60)
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "req-42.a"
    lines = wait_for(lambda: [line for line in log_lines(json_server) if line["request_id"] == "req-42.a"], bool,
                     "the access line")  # fmt: skip
    access = next(line for line in lines if line["logger"] == "promptswap.access")
    assert access["route"] == "/v1/generate" and access["status"] == 200 and access["task"] == "pt"
    assert access["version"] == 1 and access["peft_type"] == "PROMPT_TUNING" and access["method"] == "POST"
    assert access["tokens_out"] == len(answer.json()["outputs"][0]["token_ids"]) and access["tokens_in"] > 0
    assert access["latency_ms"] > 0


def test_errors_carry_the_request_id_and_bad_ids_are_replaced(json_server: LiveServer) -> None:
    for given in (None, "has spaces in it", "x" * 129):
        headers = {} if given is None else {"X-Request-ID": given}
        body = {"task": "no-such-task", "inputs": "x"}
        answer = httpx.post(f"{json_server.url}/v1/generate", json=body, headers=headers, timeout=60)
        assert answer.status_code == 404
        request_id = answer.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
        assert answer.json()["error"]["request_id"] == request_id


def test_no_key_and_no_input_is_ever_logged(json_server: LiveServer, site: Site) -> None:  # noqa: F811
    assert upload(json_server.url, "pt2", site.artifacts["prefix"]).status_code == 201  # sends the admin key
    body = {"task": "pt", "inputs": SECRET_INPUT, "parameters": {"max_new_tokens": 2}}
    assert httpx.post(f"{json_server.url}/v1/generate", json=body, timeout=60).status_code == 200
    wait_for(lambda: sum(line["logger"] == "promptswap.access" for line in log_lines(json_server)) >= 3, bool,
             "the access lines")  # fmt: skip
    text = json_server.log.read_text()
    assert ADMIN_KEY not in text and SECRET_INPUT not in text


def test_log_content_puts_inputs_in_the_access_line(site: Site, tmp_path: Path) -> None:  # noqa: F811
    args = ("--model", str(site.model_dir), "--store", (tmp_path / "prompts").as_uri(), "--log-content")
    with live_server(*args, "--log-format", "json", log_dir=tmp_path) as live:
        body = {"inputs": SECRET_INPUT, "parameters": {"max_new_tokens": 2}}
        assert httpx.post(f"{live.url}/v1/generate", json=body, timeout=60).status_code == 200
        access = wait_for(
            lambda: [line for line in log_lines(live) if line.get("route") == "/v1/generate"], bool, "access line"
        )
        assert access[0]["inputs"] == [SECRET_INPUT]


def test_a_streamed_request_is_one_span_with_its_engine_stages(site: Site, tmp_path: Path) -> None:  # noqa: F811
    exporter = InMemorySpanExporter()
    traces = TracerProvider()
    traces.add_span_processor(SimpleSpanProcessor(exporter))
    base = wrap_model(AutoModelForCausalLM.from_pretrained(site.model_dir), torch_device())
    config = ServerConfig(store=(tmp_path / "prompts").as_uri())
    app = create_app(config, base, AutoTokenizer.from_pretrained(site.model_dir), "tiny", traces=traces)
    with TestClient(app) as client:
        assert upload_in_process(client, site).status_code == 201
        exporter.clear()
        body = {"task": "prefix", "inputs": "The film was", "stream": True, "parameters": {"max_new_tokens": 4}}
        with client.stream("POST", "/v1/generate", json=body) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: {")]
    assert len(events) == 4 + 1  # four tokens and the row's end
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"POST /v1/generate", "queue", "prefill", "decode"}
    root = spans["POST /v1/generate"]
    assert root.attributes is not None and root.attributes["promptswap.task"] == "prefix"
    assert root.attributes["http.status_code"] == 200 and root.attributes["promptswap.tokens_out"] == 4
    for name in ("queue", "prefill", "decode"):
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.attributes is not None and child.attributes["promptswap.task"] == "prefix"
        assert child.attributes["promptswap.tokens_out"] == 4
        assert child.attributes["promptswap.finish_reason"] == "length"
    assert spans["queue"].end_time <= spans["prefill"].start_time + 1  # type: ignore[operator]
    assert spans["prefill"].end_time <= spans["decode"].start_time + 1  # type: ignore[operator]


def torch_device():  # type: ignore[no-untyped-def]
    import torch

    return torch.device("cpu")


def upload_in_process(client: TestClient, site: Site) -> httpx.Response:  # noqa: F811
    folder = site.artifacts["prefix"]
    files = {
        name: (name, (folder / name).read_bytes()) for name in ("adapter_config.json", "adapter_model.safetensors")
    }
    return client.post("/v1/prompts/prefix", files=files)
