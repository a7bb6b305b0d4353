"""A full disk under the directory store: a clean 507 with API.md's body, no half version, and the
store takes the upload once there is room again. The disk is a real 256 KiB tmpfs (needs root)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Site
from tests.factories import make_artifact
from tests.reliability.conftest import directory_snapshot, serve, upload
from tests.reliability.errors import assert_error

DISK_BYTES = 256 << 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    assert mounted.returncode == 0, f"this test mounts a small tmpfs and needs root: {mounted.stderr}"
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path, leave: int) -> Path:
    """Write a file until the disk is full, then give back `leave` bytes."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(4096))
        except OSError:
            pass
    with open(filler, "r+b") as handle:
        handle.truncate(max(0, filler.stat().st_size - leave))
    return filler


def test_a_full_disk_gives_a_clean_error_and_no_half_version(small_disk: Path, site: Site, tmp_path: Path) -> None:
    big = make_artifact(site.base, "prompt_tuning", 200, tmp_path / "big", seed=3)  # 51 KB of weights
    store = small_disk / "prompts"
    with serve(site.model_dir, store.as_uri(), tmp_path) as live:
        assert upload(live.url, "pt", site.artifacts["pt"]).status_code == 201
        filler = fill(small_disk, leave=16 << 10)
        listed = httpx.get(f"{live.url}/v1/prompts/pt").json()
        before = directory_snapshot(store)

        refused = upload(live.url, "pt", big)
        error = assert_error(refused, 507, "insufficient_storage")
        assert "disk is full" in error["message"]
        assert directory_snapshot(store) == before  # the staged files are gone, state.json untouched
        assert httpx.get(f"{live.url}/v1/prompts/pt").json() == listed
        assert_error(upload(live.url, "fresh", big), 507, "insufficient_storage")
        assert_error(httpx.get(f"{live.url}/v1/prompts/fresh"), 404, "unknown_task")
        assert httpx.post(f"{live.url}/v1/generate", json={"task": "pt", "inputs": "x"}).status_code == 200

        filler.unlink()
        accepted = upload(live.url, "pt", big)
        assert accepted.status_code == 201 and accepted.json()["version"] == 2, accepted.text
        answer = httpx.post(
            f"{live.url}/v1/generate", json={"task": "pt", "inputs": "x", "parameters": {"max_new_tokens": 2}}
        )
        assert answer.status_code == 200 and answer.json()["version"] == 2
    assert "Traceback" not in live.log.read_text()
