"""A tiny random T5 served by a live `promptswap serve`: every answer equals PEFT's on that request alone."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from peft import MultitaskPromptTuningConfig, PromptTuningConfig
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from tests.factories import load_peft, make_model, make_tokenizer, save_artifact
from tests.live_server import LiveServer, live_server
from tests.seq2seq_factories import SEQ2SEQ_METHODS, make_t5, peft_seq2seq_greedy, peft_seq2seq_scores

ADMIN = {"Authorization": "Bearer t5-admin"}
ARTIFACTS = {"pt": ("prompt_tuning", 6), "prefix": ("prefix", 4), "lstm": ("p_tuning_lstm", 5), "mpt": ("multitask", 3)}
FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class T5Site:
    model_dir: Path
    artifacts: dict[str, Path]
    base: PreTrainedModel
    tokenizer: object
    peft_models: dict[str, torch.nn.Module]

    def peft(self, task: str | None) -> torch.nn.Module:
        return self.peft_models[task] if task else self.base

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])  # type: ignore[operator]


def upload(url: str, task: str, folder: Path) -> httpx.Response:
    files = {name: (name, (folder / name).read_bytes()) for name in FILES}
    return httpx.post(f"{url}/v1/prompts/{task}", files=files, headers=ADMIN, timeout=60)


@pytest.fixture(scope="session")
def t5_site(tmp_path_factory: pytest.TempPathFactory) -> T5Site:
    root = tmp_path_factory.mktemp("t5-site")
    model_dir = root / "tiny-t5"
    make_t5().save_pretrained(model_dir)
    make_tokenizer(model_dir)
    base = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    artifacts = {
        task: save_artifact(base, SEQ2SEQ_METHODS[method](n), root / task, seed=seed)
        for seed, (task, (method, n)) in enumerate(ARTIFACTS.items())
    }
    models = {task: load_peft(base, folder) for task, folder in artifacts.items()}
    return T5Site(model_dir, artifacts, base, AutoTokenizer.from_pretrained(model_dir), models)


@pytest.fixture(scope="session")
def t5_server(t5_site: T5Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("t5-server")
    store = (root / "prompts").as_uri()
    args = ("--model", str(t5_site.model_dir), "--store", store, "--admin-key", ADMIN["Authorization"][7:])
    with live_server(*args, log_dir=root) as live:
        for task, folder in t5_site.artifacts.items():
            response = upload(live.url, task, folder)
            assert response.status_code == 201, response.text
        yield live


def test_concurrent_generations_of_mixed_tasks_match_peft_alone(t5_server: LiveServer, t5_site: T5Site) -> None:
    cases = [("pt", "The film was", 0), ("prefix", "Awful plot", 0), ("lstm", "Café crème", 0), (None, "numbers 01", 0),
             ("mpt", "Emoji too: 🎬", 2), ("pt", "Sentiment: positive.", 0), ("mpt", "日本語", 1)]  # fmt: skip

    def call(case: tuple[str | None, str, int]) -> dict:
        body = {"task": case[0], "inputs": case[1], "task_index": case[2], "parameters": {"max_new_tokens": 10}}
        response = httpx.post(f"{t5_server.url}/v1/generate", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(call, cases))
    eos = frozenset({t5_site.base.config.eos_token_id})
    for (task, text, index), answer in zip(cases, answers, strict=True):
        output = answer["outputs"][0]
        peft_index = index if task == "mpt" else None
        expected, _ = peft_seq2seq_greedy(t5_site.peft(task), t5_site.ids(text), 10, eos, peft_index)
        assert output["token_ids"] == expected, (task, text)
        assert output["text"] == t5_site.tokenizer.decode(expected, skip_special_tokens=True)  # type: ignore[attr-defined]
        virtual = ARTIFACTS[task][1] if task else 0
        assert output["usage"] == {"prompt_tokens": len(t5_site.ids(text)), "virtual_tokens": virtual,
                                   "completion_tokens": len(expected)}  # fmt: skip


def test_classify_probabilities_equal_peft_scores(t5_server: LiveServer, t5_site: T5Site) -> None:
    labels = {"positive": " positive", "negative": " negative", "mixed": " so-so"}
    for task, index in (("pt", 0), ("prefix", 0), ("mpt", 1), (None, 0)):
        texts = ["I loved it", "Awful, never again"]
        body = {"task": task, "inputs": texts, "labels": labels, "task_index": index}
        response = httpx.post(f"{t5_server.url}/v1/classify", json=body, timeout=120)
        assert response.status_code == 200, response.text
        for text, result in zip(texts, response.json()["results"], strict=True):
            tails = [t5_site.tokenizer(v, add_special_tokens=False)["input_ids"] for v in labels.values()]  # type: ignore[operator]
            peft_index = index if task == "mpt" else None
            scores = peft_seq2seq_scores(t5_site.peft(task), t5_site.ids(text), tails, peft_index)
            expected = dict(zip(labels, torch.softmax(scores, -1).tolist(), strict=True))
            assert result["label"] == max(expected, key=expected.__getitem__), (task, text)
            for label, probability in expected.items():
                assert math.isclose(result["scores"][label], probability, rel_tol=1e-3, abs_tol=1e-6), (task, label)


def test_openai_completions_serve_a_task(t5_server: LiveServer, t5_site: T5Site) -> None:
    body = {"model": "prefix", "prompt": "Review: fine", "max_tokens": 6, "temperature": 0}
    answer = httpx.post(f"{t5_server.url}/v1/completions", json=body, timeout=120).json()
    eos = frozenset({t5_site.base.config.eos_token_id})
    expected, _ = peft_seq2seq_greedy(t5_site.peft("prefix"), t5_site.ids("Review: fine"), 6, eos)
    assert answer["choices"][0]["text"] == t5_site.tokenizer.decode(expected, skip_special_tokens=True)  # type: ignore[attr-defined]
    models = {m["id"] for m in httpx.get(f"{t5_server.url}/v1/models").json()["data"]}
    assert set(ARTIFACTS) <= models


def test_uploads_that_do_not_fit_an_encoder_decoder_are_refused(
    t5_server: LiveServer, t5_site: T5Site, tmp_path: Path
) -> None:
    base = t5_site.base
    refused = {
        "one_submodule": save_artifact(
            copy.deepcopy(base),
            MultitaskPromptTuningConfig(
                task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, num_tasks=2, num_ranks=1, num_transformer_submodules=1
            ),
            tmp_path / "one",
            0,
        ),
        "causal": save_artifact(
            make_model("llama"), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3), tmp_path / "c", 0
        ),
        "layers": save_artifact(
            make_t5(num_layers=2, num_decoder_layers=2), SEQ2SEQ_METHODS["prefix"](3), tmp_path / "layers", 0
        ),
    }
    expected_types = {
        "one_submodule": "artifact_mismatch",
        "causal": "unsupported_method",
        "layers": "artifact_mismatch",
    }
    for task, folder in refused.items():
        response = upload(t5_server.url, task, folder)
        assert response.status_code == 422, (task, response.text)
        assert response.json()["error"]["type"] == expected_types[task], response.text
        assert httpx.get(f"{t5_server.url}/v1/prompts/{task}").status_code == 404


def test_prompts_report_the_encoder_decoder_forms(t5_server: LiveServer) -> None:
    listed = {p["task"]: p for p in httpx.get(f"{t5_server.url}/v1/prompts").json()["prompts"]}
    forms = {task: (listed[task]["model_kind"], listed[task]["runtime_form"]) for task in ARTIFACTS}
    assert forms == {
        "pt": ("seq2seq", "encoder_embeddings"),
        "prefix": ("seq2seq", "decoder_prefix_kv"),
        "lstm": ("seq2seq", "encoder_embeddings"),
        "mpt": ("seq2seq", "encoder_and_decoder_embeddings"),
    }
    assert {listed[task]["family"] for task in ARTIFACTS} == {"t5"}
