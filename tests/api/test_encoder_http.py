"""An encoder classifier (the real MiniLM) behind a live `promptswap serve`: SEQ_CLS tasks uploaded over
HTTP, /v1/classify answered by each task's own head exactly as PEFT answers, and clear refusals."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer

from tests.api.test_http import upload_files
from tests.encoder_factories import (
    load_classifier,
    load_peft_classifier,
    make_seq_cls_artifact,
    minilm_dir,
    peft_logits,
)
from tests.live_server import LiveServer, live_server

ADMIN = {"Authorization": "Bearer encoder-admin"}
# Task -> (PEFT method, virtual tokens, labels, task card or None)
TASKS = {
    "sentiment": ("prompt_tuning", 6, 2, {"template": "Review: {input}", "labels": ["negative", "positive"]}),
    "topic": ("prefix", 5, 3, {"labels": {"sports": "about sport", "politics": "about politics", "science": "sci"}}),
    "plain": ("p_tuning_v2", 4, 2, None),
}


@dataclass
class EncoderSite:
    server: LiveServer
    artifacts: dict[str, Path]
    peft_models: dict[str, PeftModel]
    tokenizer: object

    def peft_probabilities(self, task: str, text: str) -> list[float]:
        card = TASKS[task][3]
        templated = card["template"].replace("{input}", text) if card and "template" in card else text
        ids = list(self.tokenizer(templated)["input_ids"])
        return torch.softmax(peft_logits(self.peft_models[task], ids), -1).tolist()


def upload(server: LiveServer, task: str, folder: Path, card: dict | None) -> httpx.Response:
    files = upload_files(folder, card)
    return httpx.post(f"{server.url}/v1/prompts/{task}", files=files, headers=ADMIN, timeout=60)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EncoderSite]:
    root = tmp_path_factory.mktemp("encoder-site")
    model_dir = minilm_dir()
    classifiers = {labels: load_classifier(model_dir, labels) for labels in (2, 3)}
    artifacts, peft_models = {}, {}
    for seed, (task, (method, n, labels, _)) in enumerate(TASKS.items()):
        artifacts[task] = make_seq_cls_artifact(classifiers[labels], method, n, root / task, seed=seed + 11)
        peft_models[task] = load_peft_classifier(classifiers[labels], artifacts[task])
    store = (root / "prompts").as_uri()
    with live_server("--model", str(model_dir), "--store", store, "--admin-key", "encoder-admin", log_dir=root) as live:
        for task, (_, _, _, card) in TASKS.items():
            response = upload(live, task, artifacts[task], card)
            assert response.status_code == 201, response.text
        yield EncoderSite(live, artifacts, peft_models, AutoTokenizer.from_pretrained(model_dir))


def classify(site: EncoderSite, body: dict) -> httpx.Response:
    return httpx.post(f"{site.server.url}/v1/classify", json=body, timeout=120)


def test_concurrent_classify_of_each_task_equals_peft_alone(site: EncoderSite) -> None:
    cases = [
        ("sentiment", ["I loved it", "Awful. Never again!"], ["negative", "positive"]),
        ("topic", ["Extra time again", "parliament voted", "a new enzyme"], ["sports", "politics", "science"]),
        ("plain", ["ok", "the ending dragged on and on"], ["LABEL_0", "LABEL_1"]),
    ]  # fmt: skip
    with ThreadPoolExecutor(len(cases)) as pool:
        responses = list(pool.map(lambda case: classify(site, {"task": case[0], "inputs": case[1]}), cases))
    for (task, texts, names), response in zip(cases, responses, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["task"], body["version"]) == (task, 1)
        assert len(body["results"]) == len(texts)
        for text, result in zip(texts, body["results"], strict=True):
            assert list(result["scores"]) == names
            served = [result["scores"][name] for name in names]
            expected = site.peft_probabilities(task, text)
            assert max(abs(a - b) for a, b in zip(served, expected, strict=True)) < 1e-5, (task, text)
            assert result["label"] == names[max(range(len(names)), key=served.__getitem__)]
            assert abs(sum(served) - 1) < 1e-5


def test_request_labels_rename_the_head_outputs(site: EncoderSite) -> None:
    response = classify(site, {"task": "plain", "inputs": "fine", "labels": ["no", "yes"]})
    assert response.status_code == 200, response.text
    expected = site.peft_probabilities("plain", "fine")
    scores = response.json()["results"][0]["scores"]
    assert list(scores) == ["no", "yes"] and abs(scores["yes"] - expected[1]) < 1e-5


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"inputs": "no task"}, 400, "name a task"),
        ({"task": "topic", "inputs": "x", "labels": ["a", "b"]}, 400, "scores 3 labels"),
        ({"task": "sentiment", "inputs": "word " * 600}, 413, "positions"),
        ({"task": "sentiment", "inputs": "x", "task_index": 1}, 400, "task_index"),
    ],
)
def test_classify_refusals(site: EncoderSite, body: dict, status: int, message: str) -> None:
    response = classify(site, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("/v1/generate", {"task": "sentiment", "inputs": "The film was"}, "use /v1/classify"),
        ("/v1/generate", {"inputs": "The film was"}, "use /v1/classify"),
        ("/v1/completions", {"model": "sentiment", "prompt": "The film was"}, "use /v1/classify"),
        ("/v1/chat/completions", {"model": "sentiment", "messages": [{"role": "user", "content": "hi"}]}, "chat"),
    ],
)
def test_generation_routes_answer_a_clear_400(site: EncoderSite, route: str, body: dict, message: str) -> None:
    response = httpx.post(f"{site.server.url}{route}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


def test_upload_refuses_a_card_whose_labels_do_not_fit_the_head(site: EncoderSite) -> None:
    response = upload(site.server, "mislabelled", site.artifacts["topic"], {"labels": ["yes", "no"]})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "artifact_mismatch"
    assert "3 labels" in response.json()["error"]["message"]
    assert httpx.get(f"{site.server.url}/v1/prompts/mislabelled", headers=ADMIN).status_code == 404


def test_prompts_report_the_encoder_forms(site: EncoderSite) -> None:
    listed = {p["task"]: p for p in httpx.get(f"{site.server.url}/v1/prompts").json()["prompts"]}
    for task, (method, *_) in TASKS.items():
        expected = "embeddings" if method == "prompt_tuning" else "prefix_kv"  # p_tuning_v2 is a prefix
        record = listed[task]
        assert (record["family"], record["model_kind"], record["runtime_form"]) == ("bert", "encoder", expected)
