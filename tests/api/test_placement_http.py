"""LLaMA-Adapter tasks and templates that place `{prompt}` inside the text, through a live server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import torch

from tests.api.conftest import Site
from tests.api.test_http import ADMIN, generate, upload_files
from tests.live_server import LiveServer

PLACED_TEMPLATE = "Review: {input} {prompt} Sentiment:"


def test_adapter_rows_match_peft_beside_other_methods(server: LiveServer, site: Site) -> None:
    cases = [("adapter", "The film was"), ("pt", "The film was"), ("adapter", "Awful plot"), ("prefix", "Awful plot"),
             (None, "Awful plot"), ("adapter", "日本語のテキスト")]  # fmt: skip

    def call(case: tuple[str | None, str]) -> dict:
        task, text = case
        response = generate(server, {"task": task, "inputs": text, "parameters": {"max_new_tokens": 8}})
        assert response.status_code == 200, response.text
        return response.json()["outputs"][0]

    with ThreadPoolExecutor(len(cases)) as pool:
        outputs = list(pool.map(call, cases))
    for (task, text), output in zip(cases, outputs, strict=True):
        assert output["token_ids"] == site.peft_tokens(task, text, 8), (task, text)
        if task == "adapter":  # LLaMA-Adapter takes no positions
            assert output["usage"]["virtual_tokens"] == 0


@torch.no_grad()
def placed_greedy(site: Site, text: str, max_new_tokens: int) -> list[int]:
    """The model on [tokens before {prompt}] + PEFT's prompt + [tokens after], as `inputs_embeds`."""
    before, _, after = PLACED_TEMPLATE.replace("{input}", text).partition("{prompt}")
    head = site.tokenizer(before)["input_ids"]  # type: ignore[operator]
    tail = site.tokenizer(after, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    prompt = site.peft_models["pt"].get_prompt(batch_size=1)[0]  # [N, D]
    embed = site.base.get_input_embeddings()
    generated: list[int] = []
    eos = site.base.config.eos_token_id
    for _ in range(max_new_tokens):
        embeds = torch.cat([embed(torch.tensor(head)), prompt, embed(torch.tensor(tail + generated))])
        token = int(site.base(inputs_embeds=embeds[None]).logits[0, -1].argmax())
        generated.append(token)
        if token == eos:
            break
    return generated


def test_a_template_places_the_prompt_inside_the_text(server: LiveServer, site: Site) -> None:
    card = {"template": PLACED_TEMPLATE, "labels": ["good", "bad"]}
    upload = httpx.post(
        f"{server.url}/v1/prompts/placed", files=upload_files(site.artifacts["pt"], card), headers=ADMIN
    )
    assert upload.status_code == 201, upload.text
    assert upload.json()["runtime_form"] == "embeddings"
    texts = ["The film was great", "Awful plot; I left early."]
    answer = generate(server, {"task": "placed", "inputs": texts, "parameters": {"max_new_tokens": 8}})
    assert answer.status_code == 200, answer.text
    for text, output in zip(texts, answer.json()["outputs"], strict=True):
        assert output["token_ids"] == placed_greedy(site, text, 8), text
        assert output["usage"]["virtual_tokens"] == 6
    # The same artifact without the placeholder answers differently: the placement is really applied.
    unplaced = generate(server, {"task": "pt", "inputs": texts[0], "parameters": {"max_new_tokens": 8}})
    assert unplaced.json()["outputs"][0]["token_ids"] != answer.json()["outputs"][0]["token_ids"]
    classified = httpx.post(f"{server.url}/v1/classify", json={"task": "placed", "inputs": texts}, timeout=60)
    assert classified.status_code == 200, classified.text
    assert [sorted(r["scores"]) for r in classified.json()["results"]] == [["bad", "good"]] * 2


def test_a_prefix_task_cannot_place_its_prompt(server: LiveServer, site: Site) -> None:
    before = httpx.get(f"{server.url}/v1/prompts").json()
    for task in ("prefix", "adapter"):
        files = upload_files(site.artifacts[task], {"template": PLACED_TEMPLATE})
        response = httpx.post(f"{server.url}/v1/prompts/{task}", files=files, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["type"] == "invalid_card"
        assert "stores no virtual-token embeddings" in response.json()["error"]["message"]
    assert httpx.get(f"{server.url}/v1/prompts").json() == before


def test_prompts_report_method_family_and_runtime_form(server: LiveServer) -> None:
    listed = {p["task"]: p for p in httpx.get(f"{server.url}/v1/prompts").json()["prompts"]}
    expected = {
        "pt": ("PROMPT_TUNING", "prefix_kv"),
        "prefix": ("PREFIX_TUNING", "prefix_kv"),
        "mpt": ("MULTITASK_PROMPT_TUNING", "prefix_kv"),
        "adapter": ("ADAPTION_PROMPT", "adaption_prompt"),
    }
    for task, (peft_type, form) in expected.items():
        assert (listed[task]["peft_type"], listed[task]["runtime_form"]) == (peft_type, form), task
        assert (listed[task]["family"], listed[task]["model_kind"]) == ("llama", "causal")
    shown = httpx.get(f"{server.url}/v1/prompts/adapter").json()
    assert shown["runtime_form"] == "adaption_prompt" and shown["num_virtual_tokens"] == 5
