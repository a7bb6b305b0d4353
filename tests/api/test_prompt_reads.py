"""Reading the registry while another client changes it: a task changed between two store reads
answers what is there now (or 404), never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_store.file_store import FileStore
from server.api.routes_prompts import read_task
from tests.prompt_store.conftest import Upload, uploads  # noqa: F401  (real PEFT artifacts, as the registry tests use)

pytestmark = pytest.mark.anyio


class ChangedAfterRead(FileStore):
    """A real directory store where another client deletes the task and uploads it again right after the
    first read of its current version: the case that once met a `next()` without a default."""

    def __init__(self, root: Path, upload: Upload) -> None:
        super().__init__(root)
        self.upload = upload
        self.changes = 0

    async def current_version(self, task: str) -> int:
        version = await super().current_version(task)
        if self.changes == 0:
            self.changes += 1
            await self.delete_task(task)
            await self.create_version(self.upload.draft(task), self.upload.config, self.upload.weights)
        return version


async def test_a_task_replaced_between_reads_shows_its_new_versions(tmp_path: Path, uploads: list[Upload]) -> None:  # noqa: F811
    store = ChangedAfterRead(tmp_path / "prompts", uploads[2])
    for upload in uploads[:2]:
        await store.create_version(upload.draft("raced"), upload.config, upload.weights)
    current, versions = await read_task(store, "raced")
    assert store.changes == 1
    assert (current.version, current.sha256) == (1, uploads[2].artifact.sha256)
    assert [v.version for v in versions] == [1]
