"""Error answers a newcomer meets first say what is wrong and how to fix it."""

from __future__ import annotations

import httpx
import pytest

from tests.live_server import LiveServer


def error_of(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    return message


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            {"task": "pt", "inputs": "x", "parameters": {"max_tokens": 3}},
            "'max_tokens' (did you mean 'max_new_tokens'?)",
        ),
        ({"task": "pt", "input": "x"}, "'input' (did you mean 'inputs'?)"),
        (
            {"task": "pt", "inputs": "x", "parameters": {"temprature": 0.5}},
            "'temprature' (did you mean 'temperature'?)",
        ),
        ({"task": "pt", "inputs": "x", "colour": "red"}, "unknown field 'colour'; the fields here are task, inputs"),
    ],
)
def test_an_unknown_field_is_refused_naming_the_closest_valid_one(server: LiveServer, body: dict, named: str) -> None:
    message = error_of(httpx.post(f"{server.url}/v1/generate", json=body, timeout=60))
    assert named in message


def test_malformed_json_says_it_is_not_json_where_and_why(server: LiveServer) -> None:
    body = b'{"task": "pt",\n "inputs": "x",}'
    headers = {"content-type": "application/json"}
    message = error_of(httpx.post(f"{server.url}/v1/generate", content=body, headers=headers, timeout=60))
    assert message.startswith("the body is not valid JSON: ")
    assert "line 2, column 16" in message and "Expecting property name" in message


def test_a_body_without_the_json_header_is_told_to_send_it(server: LiveServer) -> None:
    response = httpx.post(f"{server.url}/v1/generate", content=b'{"task": "pt", "inputs": "x"}', timeout=60)
    assert "Content-Type: application/json" in error_of(response)


@pytest.mark.parametrize(
    ("path", "body", "hints"),
    [
        (
            "/v1/generate",
            {"task": "ptt", "inputs": "x"},
            ["'ptt' does not exist", "did you mean 'pt'", "GET /v1/prompts"],
        ),
        ("/v1/classify", {"task": "mtp", "inputs": "x", "labels": ["a"]}, ["did you mean 'mpt'", "GET /v1/prompts"]),
        ("/v1/completions", {"model": "lstn", "prompt": "x"}, ["did you mean 'lstm'", "GET /v1/models"]),
    ],
)
def test_an_unknown_task_points_to_the_list_and_names_close_matches(
    server: LiveServer, path: str, body: dict, hints: list[str]
) -> None:
    message = error_of(httpx.post(f"{server.url}{path}", json=body, timeout=60), 404)
    assert all(hint in message for hint in hints), message
