"""The official openai client, promptswap's Python clients and its CLI against a live server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, OpenAI

from clients import AsyncClient, Client
from clients.errors import BadRequest, Forbidden, NotFound, Unauthorized
from tests.api.conftest import ADMIN_KEY, Site
from tests.factories import make_artifact
from tests.live_server import LiveServer, live_server


def http_generate(server: LiveServer, task: str, text: str, max_new_tokens: int) -> dict:
    body = {"task": task, "inputs": text, "parameters": {"max_new_tokens": max_new_tokens}}
    return httpx.post(f"{server.url}/v1/generate", json=body, timeout=60).json()["outputs"][0]


def test_openai_completions_plain_and_streamed_equal_generate(server: LiveServer, site: Site) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    for task in ("pt", "prefix", str(site.model_dir)):
        expected = http_generate(server, task if task in site.artifacts else None, "The film was", 8)  # type: ignore[arg-type]
        completion = client.completions.create(model=task, prompt="The film was", max_tokens=8, temperature=0)
        assert completion.choices[0].text == expected["text"]
        assert completion.usage is not None and completion.usage.completion_tokens == len(expected["token_ids"])
        chunks = client.completions.create(model=task, prompt="The film was", max_tokens=8, temperature=0, stream=True)
        assert "".join(chunk.choices[0].text for chunk in chunks) == expected["text"]


def test_openai_models_and_chat(server: LiveServer, site: Site) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    ids = [model.id for model in client.models.list()]
    assert ids[0] == str(site.model_dir) and {"pt", "prefix", "lstm", "mpt"} <= set(ids)
    messages = [{"role": "user", "content": "Hello there"}]
    chat = client.chat.completions.create(model="pt", messages=messages, max_tokens=6, temperature=0)  # type: ignore[arg-type]
    templated = site.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids_expected = site.tokenizer(templated, add_special_tokens=False)["input_ids"]
    from tests.factories import peft_greedy

    eos = frozenset({site.base.config.eos_token_id})
    expected = peft_greedy(site.peft_models["pt"], ids_expected, 6, eos_token_ids=eos)[0]
    assert chat.choices[0].message.content == site.tokenizer.decode(expected, skip_special_tokens=True)
    streamed = client.chat.completions.create(model="pt", messages=messages, max_tokens=6, temperature=0, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == chat.choices[0].message.content
    with pytest.raises(Exception, match="404|unknown_task"):
        client.completions.create(model="no-such-task", prompt="x", max_tokens=2)


def test_openai_client_fields_are_honoured_or_refused_by_name(server: LiveServer) -> None:
    """The official client sends only the fields a caller sets: a plain call works, usage can be streamed,
    and a field promptswap does not implement is a 400 that names it, never an answer that ignored it."""
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]}]
    plain = client.chat.completions.create(model="pt", messages=messages, max_tokens=4, temperature=0)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(
            model="pt", messages=messages, max_tokens=4, temperature=0, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}, frequency_penalty=0, presence_penalty=0,
        )
    )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    streamed = list(
        client.completions.create(
            model="pt", prompt="The film was", max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )
    assert streamed[-1].usage is not None and streamed[-1].usage.completion_tokens == 3
    for fields in ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
                   {"tool_choice": "auto"}, {"n": 2}):  # fmt: skip
        with pytest.raises(BadRequestError) as refused:
            client.chat.completions.create(model="pt", messages=messages, max_tokens=2, **fields)  # type: ignore[arg-type]
        assert next(iter(fields)) in str(refused.value)
    with pytest.raises(BadRequestError, match="best_of"):
        client.completions.create(model="pt", prompt="x", max_tokens=2, best_of=2)


def test_python_client_covers_the_registry_and_inference(server: LiveServer, site: Site, tmp_path: Path) -> None:
    folder = make_artifact(site.base, "prefix_projection", 5, tmp_path / "artifact", seed=3)
    progress: list[tuple[int, int]] = []
    with Client(server.url, api_key=ADMIN_KEY) as client:
        assert client.health() and client.ready()
        record = client.upload(
            "client-task", folder, card={"labels": ["yes", "no"]}, progress=lambda s, t: progress.append((s, t))
        )
        assert record["version"] == 1 and record["peft_type"] == "PREFIX_TUNING"
        assert progress and progress[-1][0] == progress[-1][1]
        answer = client.generate("client-task", "hello", max_new_tokens=4)
        assert answer["outputs"][0]["token_ids"] == http_generate(server, "client-task", "hello", 4)["token_ids"]
        events = list(client.stream("client-task", "hello", max_new_tokens=4))
        assert "".join(e.get("text", "") for e in events if "token_id" in e) == answer["outputs"][0]["text"]
        result = client.classify("client-task", ["good", "bad"])["results"]
        assert len(result) == 2 and set(result[0]["scores"]) == {"yes", "no"}
        assert "client-task" in {p["task"] for p in client.list_prompts()}
        client.upload("client-task", folder)
        assert client.rollback("client-task", 1)["version"] == 1
        assert client.show("client-task")["current_version"] == 1
        client.delete("client-task")
        with pytest.raises(NotFound) as caught:
            client.generate("client-task", "hello")
        assert caught.value.error_type == "unknown_task"
        with pytest.raises(BadRequest):
            client.generate("pt", "hello", temperature=-1.0)
    with Client(server.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.delete("pt")
    with Client(server.url, api_key="wrong") as intruder, pytest.raises(Forbidden):
        intruder.delete("pt")


def test_async_client(server: LiveServer) -> None:
    async def run() -> tuple[dict, list[dict]]:
        async with AsyncClient(server.url) as client:
            answer = await client.generate("lstm", "async", max_new_tokens=5)
            events = [event async for event in client.stream("lstm", "async", max_new_tokens=5)]
            return answer, events

    answer, events = asyncio.run(run())
    assert "".join(e.get("text", "") for e in events if "token_id" in e) == answer["outputs"][0]["text"]


def promptswap(*args: str, url: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promptswap")
    assert executable
    env = {**os.environ, "PROMPTSWAP_URL": url}
    if key:
        env["PROMPTSWAP_API_KEY"] = key
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=120, env=env)


def test_cli_against_the_live_server(server: LiveServer, site: Site, tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"template": "Q: {input}", "labels": {"yes": " yes", "no": " no"}}))
    uploaded = promptswap("prompts", "upload", str(site.artifacts["lstm"]), "--task", "cli", "--card", str(card),
                          url=server.url, key=ADMIN_KEY)  # fmt: skip
    assert uploaded.returncode == 0, uploaded.stderr
    assert json.loads(uploaded.stdout)["version"] == 1
    listed = promptswap("prompts", "list", "--json", url=server.url)
    assert "cli" in {p["task"] for p in json.loads(listed.stdout)}
    shown = json.loads(promptswap("prompts", "show", "cli", url=server.url).stdout)
    assert shown["card"]["template"] == "Q: {input}"
    generated = promptswap("generate", "--task", "cli", "--max-new-tokens", "4", "hello", url=server.url)
    expected = http_generate(server, "cli", "hello", 4)["text"]
    assert generated.returncode == 0 and generated.stdout.rstrip("\n") == expected
    classified = promptswap("classify", "--task", "cli", "great", url=server.url)
    assert classified.returncode == 0 and json.loads(classified.stdout)
    refused = promptswap("prompts", "delete", "cli", url=server.url)
    assert refused.returncode == 1 and "error: unauthorized" in refused.stderr
    deleted = promptswap("prompts", "delete", "cli", url=server.url, key=ADMIN_KEY)
    assert deleted.returncode == 0, deleted.stderr
    missing = promptswap("generate", "--task", "cli", "hello", url=server.url)
    assert missing.returncode == 1 and "unknown_task" in missing.stderr


@pytest.fixture(scope="module")
def open_server(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """No admin key (registry writes open, which the server logs), an inference key required."""
    root = tmp_path_factory.mktemp("open")
    args = ("--model", str(site.model_dir), "--store", (root / "p").as_uri(), "--inference-key", "reader")
    with live_server(*args, log_dir=root) as live:
        yield live


def test_keys_off_for_the_registry_and_on_for_inference(open_server: LiveServer, site: Site) -> None:
    files = {
        n: (n, (site.artifacts["pt"] / n).read_bytes()) for n in ("adapter_config.json", "adapter_model.safetensors")
    }
    assert httpx.post(f"{open_server.url}/v1/prompts/open", files=files).status_code == 201
    body = {"task": "open", "inputs": "x", "parameters": {"max_new_tokens": 2}}
    assert httpx.post(f"{open_server.url}/v1/generate", json=body).status_code == 401
    assert (
        httpx.post(f"{open_server.url}/v1/generate", json=body, headers={"Authorization": "Bearer no"}).status_code
        == 403
    )
    allowed = httpx.post(f"{open_server.url}/v1/generate", json=body, headers={"Authorization": "Bearer reader"})
    assert allowed.status_code == 200 and len(allowed.json()["outputs"][0]["token_ids"]) == 2
    assert "no --admin-key" in open_server.log.read_text()
