"""Log-probabilities, constraints, penalties and biases over HTTP: the native API and the official openai client
against a real server, every value checked against PEFT's forward for that request alone."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import pytest
import torch
from openai import BadRequestError, OpenAI

from tests.api.conftest import Site
from tests.live_server import LiveServer

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "score": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["name", "score"],
    "additionalProperties": False,
}


def peft_log_probs(site: Site, task: str, input_ids: list[int], generated: list[int]) -> list[torch.Tensor]:
    """PEFT's log-softmax at each generated token's step, for the request alone."""
    model = site.peft_models[task]
    steps = []
    with torch.no_grad():
        for step in range(len(generated)):
            ids = torch.tensor([input_ids + generated[:step]])
            steps.append(torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1))
    return steps


def generate(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/generate", json=body, timeout=60)


def test_native_logprobs_equal_peft_forward_plain_and_streamed(server: LiveServer, site: Site) -> None:
    parameters = {"max_new_tokens": 5, "logprobs": True, "top_logprobs": 3}
    answer = generate(server, {"task": "prefix", "inputs": "The film was", "parameters": parameters}).json()
    output = answer["outputs"][0]
    input_ids = site.tokenizer("The film was")["input_ids"]  # type: ignore[operator]
    expected = peft_log_probs(site, "prefix", input_ids, output["token_ids"])
    assert [entry["token_id"] for entry in output["logprobs"]] == output["token_ids"]
    for entry, log_probs in zip(output["logprobs"], expected, strict=True):
        assert abs(entry["logprob"] - float(log_probs[entry["token_id"]])) < 1e-4
        best = log_probs.topk(3)
        assert [top["token_id"] for top in entry["top_logprobs"]] == best.indices.tolist()
        assert entry["token"] == site.tokenizer.decode([entry["token_id"]])  # type: ignore[attr-defined]
    body = {"task": "prefix", "inputs": "The film was", "parameters": parameters, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/generate", json=body, timeout=60) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    streamed = [event["logprob"] for event in events if "token_id" in event]
    assert streamed == output["logprobs"]


@pytest.mark.parametrize(
    ("constraint", "matches"),
    [
        ({"json_schema": SCHEMA}, lambda text: jsonschema.validate(json.loads(text), SCHEMA) is None),
        ({"regex": "[a-z]{2,5}-[0-9]{2}"}, lambda text: re.fullmatch("[a-z]{2,5}-[0-9]{2}", text)),
        ({"choice": ["good", "bad", "so-so"]}, lambda text: text in ("good", "bad", "so-so")),
    ],
)
def test_native_constraints_shape_every_answer(server: LiveServer, constraint: dict[str, Any], matches: Any) -> None:
    for task in ("pt", "prefix", "lstm", None):
        parameters = {"max_new_tokens": 60, **constraint}
        output = generate(server, {"task": task, "inputs": ["A review:", "Another"], "parameters": parameters}).json()
        for row in output["outputs"]:
            assert row["finish_reason"] in ("stop", "eos"), row
            assert matches(row["text"]), row["text"]


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"json_schema": {"type": "object", "properties": 5}}, "json_schema"),
        ({"regex": "a(b"}, "regex"),
        ({"regex": "a", "choice": ["a"]}, "at most one constraint"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logit_bias": {"not-a-token": 1.0}}, "logit_bias"),
        ({"logit_bias": {"999999": 1.0}}, "logit_bias"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"choice": []}, "choice"),
    ],
)
def test_bad_constraints_and_fields_are_400_naming_them(
    server: LiveServer, parameters: dict[str, Any], named: str
) -> None:
    response = generate(server, {"task": "pt", "inputs": "x", "parameters": {"max_new_tokens": 3, **parameters}})
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]["message"]


def test_openai_completions_logprobs_equal_peft_forward(server: LiveServer, site: Site) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    completion = client.completions.create(model="pt", prompt="The film was", max_tokens=4, temperature=0, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.token_logprobs is not None and logprobs.top_logprobs is not None
    native = generate(server, {"task": "pt", "inputs": "The film was", "parameters": {"max_new_tokens": 4}}).json()
    input_ids = site.tokenizer("The film was")["input_ids"]  # type: ignore[operator]
    expected = peft_log_probs(site, "pt", input_ids, native["outputs"][0]["token_ids"])
    for step, (value, log_probs) in enumerate(zip(logprobs.token_logprobs, expected, strict=True)):
        assert abs(value - float(log_probs[native["outputs"][0]["token_ids"][step]])) < 1e-4
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)
    assert "".join(logprobs.tokens or []) == completion.choices[0].text
    chunks = client.completions.create(
        model="pt", prompt="The film was", max_tokens=4, temperature=0, logprobs=2, stream=True
    )
    streamed = [value for chunk in chunks if chunk.choices and chunk.choices[0].logprobs
                for value in chunk.choices[0].logprobs.token_logprobs or []]  # fmt: skip
    assert streamed == logprobs.token_logprobs


def test_openai_chat_logprobs_and_json_schema(server: LiveServer, site: Site) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    messages = [{"role": "user", "content": "Rate it"}]
    chat = client.chat.completions.create(
        model="prefix",
        messages=messages,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=4,  # type: ignore[arg-type]
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) > 0
    for entry in content:
        values = [top.logprob for top in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and len(values) == 4
        assert entry.logprob <= values[0] + 1e-6
        if entry.logprob >= values[-1]:  # ranked among the top 4: it is listed there
            assert entry.token in [top.token for top in entry.top_logprobs]
    shaped = client.chat.completions.create(
        model="prefix", messages=messages, max_tokens=80, temperature=0,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "rating", "schema": SCHEMA, "strict": True}},
    )  # fmt: skip
    jsonschema.validate(json.loads(shaped.choices[0].message.content or ""), SCHEMA)
    anything = client.chat.completions.create(
        model="pt", messages=messages, max_tokens=80, temperature=0,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
    )  # fmt: skip
    assert isinstance(json.loads(anything.choices[0].message.content or ""), dict)


def test_openai_biases_and_penalties_are_honoured(server: LiveServer, site: Site) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    forced = client.completions.create(
        model="pt", prompt="The film was", max_tokens=4, temperature=0, logit_bias={"77": 100}
    )
    assert forced.choices[0].text == site.tokenizer.decode([77] * 4)  # type: ignore[attr-defined]
    plain = client.completions.create(model="pt", prompt="The film was", max_tokens=12, temperature=0)
    penalized = client.completions.create(
        model="pt", prompt="The film was", max_tokens=12, temperature=0, frequency_penalty=2.0, presence_penalty=2.0
    )
    assert penalized.choices[0].text != plain.choices[0].text
    with pytest.raises(BadRequestError, match="presence_penalty"):
        client.completions.create(model="pt", prompt="x", max_tokens=2, presence_penalty=2.5)
