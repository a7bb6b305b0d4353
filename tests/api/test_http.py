"""Every route of API.md through a real uvicorn process (`promptswap serve`) over HTTP."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from tests.api.conftest import ADMIN_KEY, Site
from tests.live_server import LiveServer

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def upload_files(folder: Path, card: dict | None = None) -> dict[str, tuple[str, bytes]]:
    files = {
        name: (name, (folder / name).read_bytes()) for name in ("adapter_config.json", "adapter_model.safetensors")
    }
    if card is not None:
        files["card.json"] = ("card.json", json.dumps(card).encode())
    return files


def generate(server: LiveServer, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/generate", json=body, timeout=120)


def events(response: httpx.Response) -> list[dict | str]:
    parsed: list[dict | str] = []
    for block in response.text.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            parsed.append(data if data == "[DONE]" else json.loads(data))
    return parsed


def test_health_ready_metrics_and_docs(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/ready").json()["status"] == "ready"
    generate(server, {"task": "pt", "inputs": "warm", "parameters": {"max_new_tokens": 2}})
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in ("promptswap_http_requests_total", "promptswap_generated_tokens_total", "promptswap_queue_depth",
                 "promptswap_batch_size", "promptswap_device_cache_hits_total", "promptswap_decode_step_seconds",
                 'promptswap_task_requests_total{task="pt"}'):  # fmt: skip
        assert name in metrics, name
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/v1/generate" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_concurrent_requests_of_different_tasks_match_peft_alone(server: LiveServer, site: Site) -> None:
    cases = [
        ("pt", "The film was", 0), ("prefix", "Awful plot", 0), ("lstm", "Café crème", 0), (None, "numbers 01", 0),
        ("mpt", "Emoji too", 2), ("pt", "Sentiment: positive.", 0), ("prefix", "日本語", 0), ("mpt", "fine", 1),
    ]  # fmt: skip

    def call(case: tuple[str | None, str, int]) -> dict:
        task, text, index = case
        body = {"task": task, "inputs": text, "task_index": index, "parameters": {"max_new_tokens": 10}}
        response = generate(server, body)
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, cases))
    for (task, text, index), answer in zip(cases, answers, strict=True):
        output = answer["outputs"][0]
        expected = site.peft_tokens(task, text, 10, index if task == "mpt" else None)
        assert output["token_ids"] == expected, (task, text)
        assert output["text"] == site.tokenizer.decode(expected, skip_special_tokens=True)
        assert output["finish_reason"] in ("length", "eos")
        assert output["usage"]["prompt_tokens"] == len(site.tokenizer(text)["input_ids"])
        assert answer["task"] == task and answer["version"] == (1 if task else None)


def test_a_list_of_inputs_answers_in_order(server: LiveServer, site: Site) -> None:
    texts = ["one", "a longer second input", "3"]
    answer = generate(server, {"task": "lstm", "inputs": texts, "parameters": {"max_new_tokens": 4}}).json()
    assert [o["token_ids"] for o in answer["outputs"]] == [site.peft_tokens("lstm", t, 4) for t in texts]
    assert [o["usage"]["virtual_tokens"] for o in answer["outputs"]] == [5, 5, 5]


def test_streaming_adds_up_to_the_plain_answer(server: LiveServer) -> None:
    body = {"task": "prefix", "inputs": "Emoji too: 🎬", "parameters": {"max_new_tokens": 12}}
    plain = generate(server, body).json()["outputs"][0]
    response = generate(server, {**body, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = events(response)
    assert stream[-1] == "[DONE]"
    tokens = [e for e in stream if isinstance(e, dict) and "token_id" in e]
    final = [e for e in stream if isinstance(e, dict) and "finish_reason" in e]
    assert [e["token_id"] for e in tokens] == plain["token_ids"]
    assert "".join(e["text"] for e in tokens) == plain["text"]
    assert final == [{"index": 0, "finish_reason": plain["finish_reason"], "usage": plain["usage"]}]


def test_stop_strings_and_sampling_parameters(server: LiveServer) -> None:
    free = generate(server, {"task": "pt", "inputs": "Review:", "parameters": {"max_new_tokens": 12}}).json()
    text = free["outputs"][0]["text"]
    stop = text[4:7]
    stopped = generate(
        server, {"task": "pt", "inputs": "Review:", "parameters": {"max_new_tokens": 12, "stop": [stop]}}
    )
    output = stopped.json()["outputs"][0]
    assert output["finish_reason"] == "stop" and output["text"] == text[: text.index(stop)]
    seeded = {"task": "pt", "inputs": "Review:", "parameters": {"max_new_tokens": 8, "temperature": 1.3, "seed": 9}}
    first, second = (generate(server, seeded).json()["outputs"][0]["token_ids"] for _ in range(2))
    assert first == second


def test_classify_with_card_labels_and_request_labels(server: LiveServer, site: Site) -> None:
    card = {"template": "Review: {input}\nSentiment:", "labels": {"positive": " positive", "negative": " negative"}}
    response = httpx.post(
        f"{server.url}/v1/prompts/cls", files=upload_files(site.artifacts["prefix"], card), headers=ADMIN
    )
    assert response.status_code == 201, response.text
    answer = httpx.post(f"{server.url}/v1/classify", json={"task": "cls", "inputs": ["I loved it", "Awful"]}).json()
    assert answer["task"] == "cls" and len(answer["results"]) == 2
    model = site.peft_models["prefix"]
    for text, result in zip(["I loved it", "Awful"], answer["results"], strict=True):
        assert set(result["scores"]) == {"positive", "negative"}
        assert math.isclose(sum(result["scores"].values()), 1.0, rel_tol=1e-6)
        assert result["label"] == max(result["scores"], key=result["scores"].get)
        expected = peft_label_probabilities(site, model, card["template"].replace("{input}", text), card["labels"])
        for label, probability in expected.items():
            assert math.isclose(result["scores"][label], probability, rel_tol=1e-3, abs_tol=1e-6)
    listed = httpx.post(f"{server.url}/v1/classify", json={"task": "pt", "inputs": "x", "labels": ["good", "bad"]})
    assert set(listed.json()["results"][0]["scores"]) == {"good", "bad"}
    missing = httpx.post(f"{server.url}/v1/classify", json={"task": "pt", "inputs": "x"})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request"


def peft_label_probabilities(site: Site, model: torch.nn.Module, text: str, labels: dict[str, str]) -> dict[str, float]:
    """API.md's definition, computed with PEFT forward on each (input + verbalizer) alone."""
    ids = site.tokenizer(text)["input_ids"]
    scores = []
    for verbalizer in labels.values():
        tail = site.tokenizer(verbalizer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + tail])).logits[0].float()
        log_probs = torch.log_softmax(logits, -1)
        scores.append(sum(float(log_probs[len(ids) - 1 + k, token]) for k, token in enumerate(tail)))
    probabilities = torch.softmax(torch.tensor(scores), -1).tolist()
    return dict(zip(labels, probabilities, strict=True))


def test_registry_routes_and_admin_key(server: LiveServer, site: Site) -> None:
    url = f"{server.url}/v1/prompts/swap"
    assert httpx.post(url, files=upload_files(site.artifacts["pt"])).status_code == 401
    wrong = httpx.post(url, files=upload_files(site.artifacts["pt"]), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["error"]["type"] == "forbidden"
    first = httpx.post(url, files=upload_files(site.artifacts["pt"]), headers=ADMIN).json()
    second = httpx.post(url, files=upload_files(site.artifacts["prefix"]), headers=ADMIN).json()
    assert (first["version"], second["version"]) == (1, 2)
    assert {"task", "version", "peft_type", "num_virtual_tokens", "sha256"} <= set(second)
    assert second["peft_type"] == "PREFIX_TUNING" and second["num_virtual_tokens"] == 4

    def answer() -> list[int]:
        return generate(server, {"task": "swap", "inputs": "hot", "parameters": {"max_new_tokens": 5}}).json()[
            "outputs"
        ][0]["token_ids"]

    assert answer() == site.peft_tokens("prefix", "hot", 5)
    shown = httpx.get(url).json()
    assert shown["current_version"] == 2 and [v["version"] for v in shown["versions"]] == [1, 2]
    assert all({"version", "sha256", "created_at", "peft_type"} <= set(v) for v in shown["versions"])
    listed = {p["task"]: p for p in httpx.get(f"{server.url}/v1/prompts").json()["prompts"]}
    assert listed["swap"]["current_version"] == 2 and listed["pt"]["num_virtual_tokens"] == 6

    assert httpx.post(f"{url}/rollback", json={"version": 1}).status_code == 401
    rolled = httpx.post(f"{url}/rollback", json={"version": 1}, headers=ADMIN)
    assert rolled.status_code == 200 and rolled.json()["version"] == 1
    assert answer() == site.peft_tokens("pt", "hot", 5)
    pinned = generate(server, {"task": "swap", "version": 2, "inputs": "hot", "parameters": {"max_new_tokens": 5}})
    assert pinned.json()["version"] == 2 and pinned.json()["outputs"][0]["token_ids"] == site.peft_tokens(
        "prefix", "hot", 5
    )
    assert httpx.post(f"{url}/rollback", json={"version": 9}, headers=ADMIN).status_code == 404

    assert httpx.delete(url).status_code == 401
    assert httpx.delete(url, headers=ADMIN).status_code == 204
    gone = generate(server, {"task": "swap", "inputs": "hot"})
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "unknown_task"
    assert httpx.get(url).status_code == 404
    assert httpx.delete(url, headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({"task": "nope", "inputs": "x"}, 404, "unknown_task"),
        ({"task": "pt", "version": 7, "inputs": "x"}, 404, "unknown_version"),
        ({"inputs": 5}, 400, "invalid_request"),
        ({"task": "pt"}, 400, "invalid_request"),
        ({"task": "pt", "inputs": "x", "parameters": {"temperature": -1}}, 400, "invalid_request"),
        ({"task": "pt", "inputs": "x", "parameters": {"top_p": 0}}, 400, "invalid_request"),
        ({"task": "pt", "inputs": ""}, 400, "invalid_request"),
        ({"task": "pt", "inputs": []}, 400, "invalid_request"),
        ({"task": "mpt", "inputs": "x", "task_index": 3}, 400, "invalid_request"),
        ({"task": "../etc", "inputs": "x"}, 400, "invalid_task_name"),
        ({"task": "pt", "inputs": "x", "parameters": {"max_new_tokens": 100000}}, 413, "context_too_long"),
        ({"task": "pt", "inputs": "word " * 300}, 413, "context_too_long"),
        ({"version": 1, "inputs": "x"}, 400, "invalid_request"),
    ],
)
def test_bad_requests_get_the_error_body(server: LiveServer, body: dict, status: int, error_type: str) -> None:
    for stream in (False, True):
        response = generate(server, {**body, "stream": stream})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["type"] == error_type and error["message"]


def test_malformed_bodies_never_give_500(server: LiveServer) -> None:
    as_json = {"content-type": "application/json"}
    for content, headers in [(b"{not json", as_json), (b"\xff\xfe", {}), (b"[]", as_json), (b"null", as_json)]:
        response = httpx.post(f"{server.url}/v1/generate", content=content, headers=headers)
        assert response.status_code == 400, response.text
        assert "error" in response.json()
    huge = httpx.post(f"{server.url}/v1/generate", json={"task": "pt", "inputs": "x" * (9 << 20)})
    assert huge.status_code == 413 and huge.json()["error"]["type"] == "too_large"
    assert httpx.get(f"{server.url}/v1/nothing-here").json()["error"]["type"] == "not_found"
    assert httpx.put(f"{server.url}/v1/generate").status_code == 405


def test_rejected_uploads_change_nothing(server: LiveServer, site: Site, tmp_path: Path) -> None:
    url = f"{server.url}/v1/prompts/bad"
    before = httpx.get(f"{server.url}/v1/prompts").json()
    config = (site.artifacts["pt"] / "adapter_config.json").read_bytes()
    weights = (site.artifacts["pt"] / "adapter_model.safetensors").read_bytes()
    nan_weights = weights[:-4] + b"\x00\x00\xc0\x7f"  # the last float becomes NaN
    config_part = {"adapter_config.json": ("adapter_config.json", config)}
    cases = [
        ({**config_part, "adapter_model.bin": ("adapter_model.bin", b"\x80\x04.")}, 422),
        ({**config_part, "adapter_model.safetensors": ("x", nan_weights)}, 422),
        (
            {"adapter_config.json": ("c", config.replace(b"64", b"65")), "adapter_model.safetensors": ("x", weights)},
            422,
        ),
        (config_part, 422),
        ({**upload_files(site.artifacts["pt"]), "card.json": ("card.json", b'{"template": "missing"}')}, 422),
    ]
    for files, status in cases:
        response = httpx.post(url, files=files, headers=ADMIN)
        assert response.status_code == status, response.text
        assert response.json()["error"]["message"]
    assert (
        httpx.post(
            f"{server.url}/v1/prompts/.hidden", files=upload_files(site.artifacts["pt"]), headers=ADMIN
        ).status_code
        == 400
    )
    assert httpx.post(url, json={"x": 1}, headers=ADMIN).status_code == 400
    assert httpx.get(f"{server.url}/v1/prompts").json() == before
