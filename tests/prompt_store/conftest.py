"""Registry fixtures: real PEFT artifact bytes and each backend, Redis on a real server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prompt_store.artifact import parse_artifact
from prompt_store.file_store import FileStore
from prompt_store.records import VersionRecord
from prompt_store.redis_store import RedisStore
from prompt_store.store import PromptStore
from server.engine.model import model_spec
from tests.factories import make_artifact, make_model


class Upload:
    """The two files of a real PEFT artifact, and the draft record the server would make for them."""

    def __init__(self, folder: Path) -> None:
        self.config = (folder / "adapter_config.json").read_bytes()
        self.weights = (folder / "adapter_model.safetensors").read_bytes()
        self.spec = model_spec(make_model("llama").config)
        self.artifact = parse_artifact(self.config, self.weights, self.spec)

    def draft(self, task: str) -> VersionRecord:
        a = self.artifact
        return VersionRecord(
            task=task, peft_type=a.peft_type, num_virtual_tokens=a.num_virtual_tokens, num_tasks=a.num_tasks,
            config=a.config, sha256=a.sha256, nbytes=a.nbytes, spec_fingerprint=self.spec.fingerprint(),
        )  # fmt: skip


@pytest.fixture(scope="session")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> list[Upload]:
    base = make_model("llama")
    root = tmp_path_factory.mktemp("uploads")
    return [Upload(make_artifact(base, "prompt_tuning", 4 + i, root / str(i), seed=i)) for i in range(3)]


def new_store(kind: str, tmp_path: Path, redis_url: str, prefix: str) -> PromptStore:
    if kind == "file":
        return FileStore(tmp_path / "prompts")
    return RedisStore.from_url(redis_url, prefix=prefix)


@pytest.fixture(params=["file", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> AsyncIterator[PromptStore]:
    store = new_store(request.param, tmp_path, redis_url, f"test-{uuid.uuid4().hex}:")
    yield store
    await store.close()
