"""A 404 changes nothing, and what a crash left in the directory store is gone once the server is back."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.conftest import Site
from tests.reliability.conftest import Backend, directory_snapshot, serve, upload
from tests.reliability.errors import ADMIN, assert_error


def test_changing_a_task_that_does_not_exist_changes_nothing(backend: Backend) -> None:
    """Rollback and delete of an unknown task used to create locks/<task>.lock."""
    before = backend.snapshot()
    for name in ("never-was", "pt-but-not", "x" * 64):
        assert_error(httpx.delete(f"{backend.url}/v1/prompts/{name}", headers=ADMIN), 404, "unknown_task")
        rollback = httpx.post(f"{backend.url}/v1/prompts/{name}/rollback", json={"version": 1}, headers=ADMIN)
        assert_error(rollback, 404, "unknown_task")
    assert_error(httpx.post(f"{backend.url}/v1/prompts/pt/rollback", json={"version": 9}, headers=ADMIN), 404)
    assert backend.snapshot() == before


def test_a_restart_removes_what_a_crash_left(site: Site, tmp_path: Path) -> None:
    store = tmp_path / "prompts"
    with serve(site.model_dir, store.as_uri(), tmp_path) as live:
        assert upload(live.url, "t", site.artifacts["pt"]).status_code == 201
    clean = directory_snapshot(store)
    tasks = store / "tasks"
    leftovers = [  # what kill -9 leaves at each step of an upload, and of a delete
        tasks / "t" / ".staging-0123" / "adapter_model.safetensors",
        tasks / "t" / ".state.json.4567",
        tasks / "t" / "v2" / "record.json",
        tasks / ".deleted-89ab" / "v1" / "adapter_model.safetensors",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    with serve(site.model_dir, store.as_uri(), tmp_path) as live:
        assert directory_snapshot(store) == clean
        body = {"task": "t", "inputs": "after", "parameters": {"max_new_tokens": 2}}
        assert httpx.post(f"{live.url}/v1/generate", json=body, timeout=60).status_code == 200
        assert upload(live.url, "t", site.artifacts["prefix"]).json()["version"] == 2
