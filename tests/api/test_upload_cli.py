"""Uploading as the walk-through does: the folder's card.json is used (and named), the same files and
card again create nothing, and `prompts list` is a table (JSON with --json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx

from tests.api.conftest import ADMIN_KEY, Site
from tests.api.test_clients import promptswap
from tests.live_server import LiveServer

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CARD = {"template": "Review: {input}\nSentiment:", "labels": {"positive": " good", "negative": " bad"}}


def folder_with_card(site: Site, tmp_path: Path) -> Path:
    folder = tmp_path / "with-card"
    shutil.copytree(site.artifacts["lstm"], folder)
    (folder / "card.json").write_text(json.dumps(CARD))
    return folder


def test_the_folders_card_is_used_and_named(server: LiveServer, site: Site, tmp_path: Path) -> None:
    folder = folder_with_card(site, tmp_path)
    uploaded = promptswap("prompts", "upload", str(folder), "--task", "carded", url=server.url, key=ADMIN_KEY)
    assert uploaded.returncode == 0, uploaded.stderr
    assert f"card: {folder / 'card.json'}" in uploaded.stderr
    assert json.loads(uploaded.stdout)["card"]["labels"] == CARD["labels"]
    # Classify needs no labels in the request: they come from the card that was uploaded.
    answer = httpx.post(f"{server.url}/v1/classify", json={"task": "carded", "inputs": "fine"}, timeout=60)
    assert answer.status_code == 200 and set(answer.json()["results"][0]["scores"]) == {"positive", "negative"}
    bare = promptswap("prompts", "upload", str(folder), "--task", "carded", "--no-card", url=server.url, key=ADMIN_KEY)
    assert "card: none" in bare.stderr and json.loads(bare.stdout)["card"] is None


def test_the_same_files_and_card_again_answer_200_unchanged(server: LiveServer, site: Site, tmp_path: Path) -> None:
    folder = folder_with_card(site, tmp_path)
    files = {name: (name, (folder / name).read_bytes()) for name in ("adapter_config.json", "adapter_model.safetensors",
                                                                      "card.json")}  # fmt: skip
    url = f"{server.url}/v1/prompts/twice"
    first = httpx.post(url, files=files, headers=ADMIN, timeout=60)
    assert first.status_code == 201 and first.json()["unchanged"] is False
    again = httpx.post(url, files=files, headers=ADMIN, timeout=60)
    assert again.status_code == 200, again.text
    assert again.json()["unchanged"] is True and again.json()["version"] == first.json()["version"] == 1
    assert [v["version"] for v in httpx.get(url).json()["versions"]] == [1]
    cli = promptswap("prompts", "upload", str(folder), "--task", "twice", url=server.url, key=ADMIN_KEY)
    assert cli.returncode == 0 and "unchanged: version 1 of twice" in cli.stderr
    other_card = {**files, "card.json": ("card.json", b'{"template": "{input}"}')}
    changed = httpx.post(url, files=other_card, headers=ADMIN, timeout=60)
    assert changed.status_code == 201 and changed.json()["version"] == 2


def test_prompts_list_is_a_table_and_json_for_scripts(server: LiveServer) -> None:
    table = promptswap("prompts", "list", url=server.url)
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["TASK", "VERSION", "METHOD", "VIRTUAL", "TOKENS", "SIZE", "UPDATED"]
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows["pt"][1:4] == ["1", "PROMPT_TUNING", "6"]
    assert rows["pt"][5] == "KiB" and len(rows["pt"][6]) == len("2026-11-30")  # size, then the date and time
    listed = json.loads(promptswap("prompts", "list", "--json", url=server.url).stdout)
    assert {p["task"] for p in listed} == set(rows)
