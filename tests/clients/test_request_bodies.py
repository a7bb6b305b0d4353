"""The JSON bodies the clients send: only what the caller set, in the shape API.md describes."""

from __future__ import annotations

from typing import Any

import pytest

from clients.client import GenerateOptions, classify_call, completions_call, generate_call, task_path


@pytest.mark.parametrize(
    ("task", "inputs", "options", "body"),
    [
        ("s", "The film was", {}, {"task": "s", "inputs": "The film was", "task_index": 0, "parameters": {}}),
        (None, ["a", "b"], {"seed": None, "top_k": None}, {"inputs": ["a", "b"], "task_index": 0, "parameters": {}}),
        (
            "s",
            "x",
            {"version": 2, "task_index": 1, "max_new_tokens": 8, "temperature": 0.0, "stop": "\n"},
            {
                "task": "s",
                "inputs": "x",
                "version": 2,
                "task_index": 1,
                "parameters": {"max_new_tokens": 8, "temperature": 0.0, "stop": ["\n"]},
            },
        ),
        (
            "s",
            "x",
            {"top_p": 0.9, "top_k": 5, "seed": 0, "stop": [".", "!"]},
            {
                "task": "s",
                "inputs": "x",
                "task_index": 0,
                "parameters": {"top_p": 0.9, "top_k": 5, "seed": 0, "stop": [".", "!"]},
            },
        ),
    ],
)
def test_generate_body(task: str | None, inputs: Any, options: GenerateOptions, body: dict[str, Any]) -> None:
    call = generate_call(task, inputs, options, stream=True)
    assert (call.method, call.path) == ("POST", "/v1/generate")
    assert call.body == {**body, "stream": True}


def test_unknown_generate_option_is_an_error() -> None:
    with pytest.raises(TypeError, match="max_tokens"):
        generate_call("s", "x", {"max_tokens": 3}, stream=False)  # type: ignore[typeddict-unknown-key]


def test_classify_body() -> None:
    assert classify_call("s", ["a"], None, None, 0).body == {"task": "s", "inputs": ["a"], "task_index": 0}
    labels = {"positive": " good"}
    assert classify_call("s", "a", labels, 3, 1).body == {
        "task": "s",
        "inputs": "a",
        "labels": labels,
        "version": 3,
        "task_index": 1,
    }


def test_completions_body_passes_fields_through_but_does_not_stream() -> None:
    call = completions_call("sentiment", "The film was", {"max_tokens": 4, "temperature": 0})
    assert call.body == {"model": "sentiment", "prompt": "The film was", "max_tokens": 4, "temperature": 0}
    with pytest.raises(ValueError, match="does not stream"):
        completions_call("sentiment", "x", {"stream": True})


@pytest.mark.parametrize(
    ("task", "path"),
    [("sentiment", "/v1/prompts/sentiment"), ("a b?c#d", "/v1/prompts/a%20b%3Fc%23d"), ("a/b", "/v1/prompts/a%2Fb")],
)
def test_task_path_keeps_the_whole_name(task: str, path: str) -> None:
    assert task_path(task) == path
