"""Structured output and log-probabilities in the engine: grammar constraints (JSON schema, regex, choice),
each token's log-probability, logit biases and presence/frequency penalties, all in mixed batches."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema
import pytest
import torch

from server.engine.constraints import Constraint
from server.errors import InvalidRequest
from tests.conftest import Served, TaskRequest, Zoo
from tests.engine.test_continuous import speak_words
from tests.factories import VOCAB, peft_greedy

TASKS = (None, "prefix", "prompt_tuning", "p_tuning_lstm", "cpt", "cartridge")


def reference(zoo: Zoo, task: str | None) -> torch.nn.Module:
    return zoo.peft_models[task] if task else zoo.base


def prompt_ids(zoo: Zoo, text: str) -> list[int]:
    assert zoo.tokenizer is not None
    return list(zoo.tokenizer(text)["input_ids"])


def test_each_tokens_log_probability_equals_peft_forward(llama_zoo: Zoo) -> None:
    """Every reported log-probability, and the top 5 at each step, equal the log-softmax of PEFT's forward
    for that row alone (a constrained row's too: they are the model's, before the grammar); a row that asks
    for none gets none."""
    served = llama_zoo.engine()
    requests = [
        TaskRequest(prompt_ids(llama_zoo, f"Review {i}: fine."), task, {"max_new_tokens": 6, "logprobs": 5})
        for i, task in enumerate(TASKS)
    ]
    # Constrained, the reported values are still the model's own (before the grammar's mask).
    choice = {"max_new_tokens": 6, "logprobs": 5, "constraint": Constraint.choice(["yes", "no"])}
    requests.append(TaskRequest(prompt_ids(llama_zoo, "Agreed?"), "prefix", choice))
    requests.append(TaskRequest(prompt_ids(llama_zoo, "plain"), "prefix", {"max_new_tokens": 6}))
    generations = served.generate(requests)
    assert generations[-1].logprobs == []
    for request, generation in zip(requests[:-1], generations, strict=False):
        assert len(generation.logprobs) == len(generation.token_ids) > 0
        model = reference(llama_zoo, request.task)
        for step, entry in enumerate(generation.logprobs):
            _, logits = peft_greedy(model, request.input_ids + generation.token_ids[:step], 1)
            log_probs = torch.log_softmax(logits, dim=-1)
            token = generation.token_ids[step]
            assert entry.token_id == token
            assert abs(entry.logprob - float(log_probs[token])) < 1e-4, (request.task, step)
            best = log_probs.topk(5)
            assert [token_id for token_id, _ in entry.top] == best.indices.tolist()
            assert max(abs(a - b) for (_, a), b in zip(entry.top, best.values.tolist(), strict=True)) < 1e-4


def random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """An object schema with bounded members: strings with lengths or patterns, integers and numbers in ranges,
    booleans, enums, arrays of bounded length and (one level down) nested objects, some of them required."""
    kinds = ["string", "pattern", "integer", "number", "boolean", "enum", "array"] + (["object"] if depth < 2 else [])
    properties: dict[str, Any] = {}
    for index in range(rng.randint(1, 4)):
        kind = rng.choice(kinds)
        if kind == "string":
            member: dict[str, Any] = {"type": "string", "maxLength": rng.randint(1, 6)}
        elif kind == "pattern":
            member = {"type": "string", "pattern": rng.choice(["^[a-z]{1,4}$", "^[0-9]{2}-[A-Z]$", "^(yes|no)$"])}
        elif kind == "integer":
            low = rng.randint(-50, 50)
            member = {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 500)}
        elif kind == "number":
            member = {"type": "number", "minimum": 0, "maximum": rng.choice([1, 10, 1000])}
        elif kind == "boolean":
            member = {"type": "boolean"}
        elif kind == "enum":
            member = {"enum": rng.sample(["red", "green", "blue", 1, 2, True, None], rng.randint(1, 4))}
        elif kind == "array":
            item = rng.choice([{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "boolean"}])
            member = {"type": "array", "items": item, "maxItems": rng.randint(0, 3)}
        else:
            member = random_schema(rng, depth + 1)
        properties[f"{kind}_{index}"] = member
    required = rng.sample(sorted(properties), rng.randint(0, len(properties)))
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def test_json_schema_outputs_parse_and_validate(llama_zoo: Zoo) -> None:
    """60 generated schemas on a random-weight model, with several tasks: every answer that ends by the
    grammar or EOS (not by length) parses and validates; nearly all of them end that way."""
    served = llama_zoo.engine()
    rng = random.Random(17)
    schemas = [random_schema(rng) for _ in range(60)]
    requests = [
        TaskRequest(prompt_ids(llama_zoo, f"Fill in {i}:"), TASKS[i % len(TASKS)],
                    {"max_new_tokens": 160, "constraint": Constraint.json_schema(schema)})
        for i, schema in enumerate(schemas)
    ]  # fmt: skip
    generations = served.generate(requests)
    ended = 0
    for schema, generation in zip(schemas, generations, strict=True):
        if generation.finish_reason == "length":
            continue
        ended += 1
        assert generation.finish_reason in ("stop", "eos")
        jsonschema.validate(json.loads(generation.text), schema)
    print(f"{ended} of {len(schemas)} constrained answers ended before the length limit, all valid")
    assert ended >= 0.8 * len(schemas), f"only {ended} of {len(schemas)} answers ended before the length limit"


CHOICES = ["positive", "negative", "neutral", 'it "depends"']


@pytest.mark.parametrize(
    ("constraint", "matches"),
    [
        (Constraint.regex(r"[a-z]{1,6}@[a-z]{2,4}\.(com|org)"), r"[a-z]{1,6}@[a-z]{2,4}\.(com|org)"),
        (Constraint.regex(r"(19|20)[0-9]{2}-[01][0-9]"), r"(19|20)[0-9]{2}-[01][0-9]"),
        (Constraint.choice(CHOICES), "|".join(re.escape(choice) for choice in CHOICES)),
    ],
)
def test_regex_and_choice_outputs_match(llama_zoo: Zoo, constraint: Constraint, matches: str) -> None:
    served = llama_zoo.engine()
    requests = [
        TaskRequest(prompt_ids(llama_zoo, f"Answer {i}:"), task, {"max_new_tokens": 40, "constraint": constraint})
        for i, task in enumerate(TASKS)
    ]
    for generation in served.generate(requests):
        assert generation.finish_reason == "stop"
        assert re.fullmatch(matches, generation.text), generation.text


def test_a_constraint_that_allows_the_greedy_path_changes_nothing(llama_zoo: Zoo) -> None:
    """Constrained to exactly its own free answer (as a choice, and as a regex), a row gives the same tokens,
    and ends there with "stop"."""
    served = llama_zoo.engine()
    speak_words(served)
    prompt = prompt_ids(llama_zoo, "Review: fine.")
    free = served.generate([TaskRequest(prompt, "prefix", {"max_new_tokens": 10, "stop_at_eos": False})])[0]
    assert re.fullmatch(r"[A-Za-z ]+", free.text)
    for constraint in (Constraint.choice([free.text]), Constraint.regex(free.text)):
        options = {"max_new_tokens": 30, "stop_at_eos": False, "constraint": constraint}
        constrained = served.generate([TaskRequest(prompt, "prefix", options)])[0]
        assert constrained.token_ids == free.token_ids and constrained.text == free.text
        assert constrained.finish_reason == "stop"


def test_biases_and_penalties_are_applied_as_specified(llama_zoo: Zoo) -> None:
    """A +100 bias makes a token every answer; penalties follow the formula at every step (checked against
    PEFT's forward: logits - frequency x count - presence x [count > 0], over the row's generated tokens)."""
    served = llama_zoo.engine()
    prompt = prompt_ids(llama_zoo, "Review: fine.")
    forced = served.generate([TaskRequest(prompt, "prefix", {"max_new_tokens": 5, "logit_bias": ((77, 100.0),)})])[0]
    assert forced.token_ids == [77] * 5
    options = {"max_new_tokens": 12, "stop_at_eos": False, "presence_penalty": 1.5, "frequency_penalty": 0.5}
    penalized = served.generate([TaskRequest(prompt, "prefix", options)])[0]
    model = reference(llama_zoo, "prefix")
    for step, token in enumerate(penalized.token_ids):
        _, logits = peft_greedy(model, prompt + penalized.token_ids[:step], 1)
        seen = torch.tensor(penalized.token_ids[:step], dtype=torch.long, device=logits.device)
        counts = torch.bincount(seen, minlength=VOCAB).float()
        adjusted = logits - 0.5 * counts - 1.5 * (counts > 0).float()
        assert token == int(adjusted.argmax()), step
    unpenalized = served.generate([TaskRequest(prompt, "prefix", {"max_new_tokens": 12, "stop_at_eos": False})])[0]
    assert unpenalized.token_ids != penalized.token_ids, "the penalties changed nothing: the test would not notice"


def test_rows_of_every_kind_share_a_batch_and_each_gets_its_answer_alone(llama_zoo: Zoo) -> None:
    served = llama_zoo.engine()
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}}}
    kinds: list[dict[str, Any]] = [
        {"constraint": Constraint.json_schema(schema)},
        {"constraint": Constraint.regex(r"[a-z]{2,5}")},
        {"constraint": Constraint.choice(["yes", "no"])},
        {"logprobs": 3},
        {"presence_penalty": 1.0},
        {"logit_bias": ((40, 5.0), (41, -5.0))},
        {"temperature": 0.8, "seed": 3},
        {},
    ]
    rows = [
        TaskRequest(prompt_ids(llama_zoo, f"Row {i}:"), TASKS[i % len(TASKS)], {"max_new_tokens": 12, **options})
        for i, options in enumerate(kinds * 2)
    ]
    together = served.generate(rows)
    for row, generation in zip(rows, together, strict=True):
        alone = served.generate([row])[0]
        assert generation.token_ids == alone.token_ids and generation.text == alone.text, row.options
        assert len(generation.logprobs) == len(alone.logprobs)
        for a, b in zip(generation.logprobs, alone.logprobs, strict=True):
            assert a.token_id == b.token_id and abs(a.logprob - b.logprob) < 1e-4


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"constraint": Constraint.json_schema({"type": "object", "properties": 5})}, "properties must be an object"),
        ({"constraint": Constraint.regex("a(b")}, "unclosed group"),
        ({"constraint": Constraint("json_schema", "{not json")}, "json_schema"),
        ({"logprobs": 21}, "logprobs"),
        ({"logit_bias": ((VOCAB, 1.0),)}, "logit_bias"),
        ({"logit_bias": ((3, 101.0),)}, "logit_bias"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3.0}, "frequency_penalty"),
    ],
)  # fmt: skip
def test_bad_constraints_and_fields_are_refused_by_name(llama_zoo: Zoo, options: dict[str, Any], named: str) -> None:
    served = llama_zoo.engine()
    with pytest.raises(InvalidRequest, match=re.escape(named)):
        served.generate([TaskRequest([5, 6, 7], "prefix", {"max_new_tokens": 4, **options})])


def test_choice_needs_options() -> None:
    with pytest.raises(InvalidRequest, match="choice"):
        Constraint.choice([])


def test_a_model_without_a_tokenizer_refuses_constraints(zoo: Zoo) -> None:
    served: Served = zoo.engine()
    with pytest.raises(InvalidRequest, match="tokenizer"):
        served.generate([TaskRequest([5, 6], None, {"constraint": Constraint.regex("[a-z]+")})])
