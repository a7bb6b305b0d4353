"""The OpenAPI document tells the truth: each route lists the statuses it really answers, errors with
API.md's body, 200s with their real schema; schemathesis checks live answers against it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.live_server import LiveServer
from tests.reliability.errors import ADMIN_KEY
from tests.reliability.test_schemathesis import fuzzed  # noqa: F401  (a server the fuzzer may change)

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def operations(document: dict) -> Iterator[tuple[str, dict]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_route_declares_its_real_answers(server: LiveServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert "HTTPValidationError" not in json.dumps(document)
    schemas = document["components"]["schemas"]
    for name, operation in operations(document):
        responses = operation["responses"]
        success = [status for status in responses if status.startswith("2")]
        assert success, name
        for status, response in responses.items():
            if status.startswith("2") and status != "204" and not name.startswith("GET /metrics"):
                ref = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                assert schemas[ref]["properties"], (name, status)  # a real schema, not an empty {}
            elif not status.startswith("2"):
                content = response["content"]
                assert [c["schema"]["$ref"].rsplit("/", 1)[-1] for c in content.values()] == ["ErrorBody"], (
                    name,
                    status,
                )
    generate = dict(operations(document))["POST /v1/generate"]["responses"]
    assert set(generate) == {"200", "400", "401", "403", "404", "413", "429", "503"}
    assert "text/event-stream" in generate["200"]["content"]
    upload_answers = dict(operations(document))["POST /v1/prompts/{task}"]["responses"]
    assert {"200", "201", "409", "413", "422", "507"} <= set(upload_answers)


def test_live_answers_match_the_document(fuzzed: LiveServer, tmp_path: Path) -> None:  # noqa: F811
    command = [
        shutil.which("st") or "st", "run", f"{fuzzed.url}/openapi.json", "--checks", f"{CONFORMANCE},api_error_body",
        "--phases", "examples,coverage,fuzzing", "--max-examples", "8", "--seed", "15", "--workers", "1",
        "--header", f"Authorization: Bearer {ADMIN_KEY}", "--request-timeout", "120",
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.reliability.schemathesis_hooks", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1800, check=False)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
