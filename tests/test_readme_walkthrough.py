"""The README's walk-through, run as written: every bash and Python block of that section, in order,
against `promptswap serve` on the embedded model. Only the port (8000 may be taken on a shared
machine) and the /tmp folder are swapped for the test's own; the `pip install` line is checked, not
run (the extra it names must exist and be installed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import requires
from pathlib import Path

import pytest

from tests.live_server import live_server

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)


def walkthrough() -> list[tuple[str, str]]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    return BLOCK.findall(section)


def test_the_install_line_names_an_extra_with_what_the_examples_need() -> None:
    (install,) = [code for kind, code in walkthrough() if code.startswith("pip install")]
    extra = re.fullmatch(r'pip install -e "\.\[(\w+)\]"\n', install).group(1)  # type: ignore[union-attr]
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    assert {"peft", "openai"} <= {re.split(r"[=<>\[]", d)[0] for d in declared}
    installed = " ".join(requires("promptswap") or [])
    assert f'extra == "{extra}"' in installed


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> list[subprocess.CompletedProcess[str]]:
    """Each block of the walk-through run in order, against a server on the embedded default model."""
    root = tmp_path_factory.mktemp("walkthrough")
    env = {**os.environ, "XDG_DATA_HOME": str(root / "data")}  # the default store, inside the test's folder
    with live_server(log_dir=root, env=env, timeout=600) as live:
        env["PROMPTSWAP_URL"] = live.url
        results = []
        for kind, code in walkthrough():
            if code.startswith("pip install"):
                continue
            code = re.sub(r"(localhost|127\.0\.0\.1):8000", live.url.removeprefix("http://"), code)
            code = code.replace("/tmp/sentiment", str(root / "sentiment"))
            command = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
            result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=3600)
            assert result.returncode == 0, f"{code}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            results.append(result)
        return results


def test_the_walkthrough_runs_and_answers_what_the_readme_says(
    outputs: list[subprocess.CompletedProcess[str]],
) -> None:
    train, upload, curl, python_client, openai_client = outputs
    assert "training loss" in train.stdout and "training:" in train.stderr  # the summary, and a progress bar
    assert re.search(r"card: \S*sentiment/card\.json", upload.stderr), upload.stderr
    lines = upload.stdout.splitlines()  # the upload's JSON, then `prompts list`'s table
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("TASK")) :]
    assert table[0].split()[:3] == ["TASK", "VERSION", "METHOD"] and table[1].split()[:3] == [
        "sentiment", "1", "PROMPT_TUNING"
    ]  # fmt: skip
    decoder = json.JSONDecoder()  # curl prints each answer as it comes, with no newline between them
    generated, end = decoder.raw_decode(curl.stdout)
    classified, _ = decoder.raw_decode(curl.stdout, end)
    assert generated["outputs"][0]["text"] == " negative"  # no stray newline: the card stops at "\n"
    assert [r["label"] for r in classified["results"]] == ["positive", "negative"]
    assert "'label': 'positive'" in python_client.stdout
    assert "Completion(" in openai_client.stdout and "ChatCompletion(" in openai_client.stdout
