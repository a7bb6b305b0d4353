"""Every registry operation on both backends (Redis on a real server), concurrency and crash safety."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import uuid
from pathlib import Path

import pytest

from prompt_store import file_store
from prompt_store.errors import Conflict, InvalidTaskName, StoreFull, UnknownTask, UnknownVersion
from prompt_store.file_store import FileStore
from prompt_store.redis_store import RedisStore
from prompt_store.store import PromptStore, open_store
from server.api.errors import status_of
from tests.prompt_store.conftest import Upload, new_store

pytestmark = pytest.mark.anyio


async def test_versions_pointer_rollback_and_delete(store: PromptStore, uploads: list[Upload]) -> None:
    first = await store.create_version(uploads[0].draft("sentiment"), uploads[0].config, uploads[0].weights)
    second = await store.create_version(uploads[1].draft("sentiment"), uploads[1].config, uploads[1].weights)
    await store.create_version(uploads[2].draft("other"), uploads[2].config, uploads[2].weights)
    assert (first.version, second.version) == (1, 2)
    assert second.created_at >= first.created_at > 0
    assert await store.current_version("sentiment") == 2
    assert await store.list_tasks() == {"other": 1, "sentiment": 2}

    stored = await store.get_version("sentiment", 1)
    assert (stored.config_bytes, stored.weights_bytes) == (uploads[0].config, uploads[0].weights)
    assert stored.record == first
    assert await store.get_record("sentiment", 2) == second
    assert [r.version for r in await store.list_versions("sentiment")] == [1, 2]
    assert [r.sha256 for r in await store.list_versions("sentiment")] == [
        uploads[0].artifact.sha256,
        uploads[1].artifact.sha256,
    ]

    assert (await store.rollback("sentiment", 1)).version == 1
    assert await store.current_version("sentiment") == 1
    with pytest.raises(UnknownVersion, match="no version 7"):
        await store.rollback("sentiment", 7)
    with pytest.raises(UnknownVersion):
        await store.get_version("sentiment", 3)
    assert await store.current_version("sentiment") == 1

    third = await store.create_version(uploads[2].draft("sentiment"), uploads[2].config, uploads[2].weights)
    assert third.version == 3 and await store.current_version("sentiment") == 3

    await store.delete_task("sentiment")
    assert await store.list_tasks() == {"other": 1}
    for operation in (
        store.current_version("sentiment"), store.get_version("sentiment", 1), store.get_record("sentiment", 1),
        store.list_versions("sentiment"), store.rollback("sentiment", 1), store.delete_task("sentiment"),
    ):  # fmt: skip
        with pytest.raises(UnknownTask, match="'sentiment' does not exist"):
            await operation
    again = await store.create_version(uploads[0].draft("sentiment"), uploads[0].config, uploads[0].weights)
    assert again.version == 1
    await store.ping()


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../x", "x" * 65, "ünï", "a b", "a:b"])
async def test_bad_task_names_are_refused(store: PromptStore, uploads: list[Upload], name: str) -> None:
    with pytest.raises(InvalidTaskName, match="1-64 characters"):
        await store.create_version(uploads[0].draft(name), uploads[0].config, uploads[0].weights)
    with pytest.raises(InvalidTaskName):
        await store.current_version(name)
    assert await store.list_tasks() == {}


@pytest.mark.parametrize("name", ["a", "A.b-c_9", "x" * 64, "-dash", "v1.2"])
async def test_good_task_names(store: PromptStore, uploads: list[Upload], name: str) -> None:
    await store.create_version(uploads[0].draft(name), uploads[0].config, uploads[0].weights)
    assert await store.list_tasks() == {name: 1}


def _write_versions(kind: str, root: str, redis_url: str, prefix: str, upload: Upload, count: int) -> list[int]:
    async def run() -> list[int]:
        store = new_store(kind, Path(root), redis_url, prefix)
        try:
            return [
                (await store.create_version(upload.draft("race"), upload.config, upload.weights)).version
                for _ in range(count)
            ]
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_racing_writers_in_threads_get_distinct_consecutive_versions(
    kind: str, tmp_path: Path, redis_url: str, uploads: list[Upload]
) -> None:
    prefix = f"race-{uuid.uuid4().hex}:"
    results: list[list[int]] = []

    def writer() -> None:
        results.append(_write_versions(kind, str(tmp_path), redis_url, prefix, uploads[0], 5))

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = sorted(v for result in results for v in result)
    assert versions == list(range(1, 31))
    listed = asyncio.run(_listed(kind, tmp_path, redis_url, prefix))
    assert listed == list(range(1, 31))


async def _listed(kind: str, tmp_path: Path, redis_url: str, prefix: str) -> list[int]:
    store = new_store(kind, tmp_path, redis_url, prefix)
    try:
        return sorted(r.version for r in await store.list_versions("race"))
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_racing_writers_in_processes_get_distinct_consecutive_versions(
    kind: str, tmp_path: Path, redis_url: str, uploads: list[Upload]
) -> None:
    prefix = f"race-{uuid.uuid4().hex}:"
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        args = [(kind, str(tmp_path), redis_url, prefix, uploads[0], 6)] * 3
        results = pool.starmap(_write_versions, args)
    assert sorted(v for result in results for v in result) == list(range(1, 19))
    assert asyncio.run(_listed(kind, tmp_path, redis_url, prefix)) == list(range(1, 19))


class Crash(Exception):
    """Stands in for a power cut at one step of a write."""


@pytest.mark.parametrize("failing_step", [1, 2])
async def test_file_write_interrupted_at_each_step_leaves_nothing_visible(
    tmp_path: Path, uploads: list[Upload], monkeypatch: pytest.MonkeyPatch, failing_step: int
) -> None:
    """Step 1 renames the staged folder into place, step 2 publishes state.json."""
    store = FileStore(tmp_path)
    await store.create_version(uploads[0].draft("t"), uploads[0].config, uploads[0].weights)
    calls = 0
    real_replace = file_store._replace

    def replace(src: object, dst: object) -> None:
        nonlocal calls
        calls += 1
        if calls == failing_step:
            raise Crash
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(file_store, "_replace", replace)
    with pytest.raises(Crash):
        await store.create_version(uploads[1].draft("t"), uploads[1].config, uploads[1].weights)
    monkeypatch.setattr(file_store, "_replace", real_replace)

    assert [r.version for r in await store.list_versions("t")] == [1]
    assert await store.current_version("t") == 1
    assert not [p.name for p in (tmp_path / "tasks" / "t").iterdir() if p.name.startswith(".")]
    reopened = FileStore(tmp_path)
    after = await reopened.create_version(uploads[2].draft("t"), uploads[2].config, uploads[2].weights)
    assert after.version == 2
    assert (await reopened.get_version("t", 2)).weights_bytes == uploads[2].weights


async def test_file_write_failing_mid_file_leaves_nothing_visible(
    tmp_path: Path, uploads: list[Upload], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path)
    real_write = file_store._write_synced

    def disk_full(path: Path, data: bytes) -> None:
        if path.name == "adapter_model.safetensors":
            path.write_bytes(data[:10])
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(file_store, "_write_synced", disk_full)
    with pytest.raises(StoreFull):  # 507, not a 500: nothing was stored
        await store.create_version(uploads[0].draft("t"), uploads[0].config, uploads[0].weights)
    monkeypatch.setattr(file_store, "_write_synced", real_write)
    assert await store.list_tasks() == {}
    assert (await store.create_version(uploads[0].draft("t"), uploads[0].config, uploads[0].weights)).version == 1


async def test_redis_write_interrupted_between_blobs_and_pointer(
    redis_url: str, uploads: list[Upload], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore.from_url(redis_url, prefix=f"crash-{uuid.uuid4().hex}:")
    await store.create_version(uploads[0].draft("t"), uploads[0].config, uploads[0].weights)

    async def crash(**_: object) -> None:
        raise Crash

    monkeypatch.setattr(store, "_commit", crash)
    with pytest.raises(Crash):
        await store.create_version(uploads[1].draft("t"), uploads[1].config, uploads[1].weights)
    monkeypatch.undo()

    assert [r.version for r in await store.list_versions("t")] == [1]
    assert await store.current_version("t") == 1
    staged = [key async for key in store.client.scan_iter(match=f"{store.prefix}staging:*")]
    assert len(staged) == 2  # the orphaned upload, which Redis expires by itself
    assert all([0 < await store.client.ttl(key) <= 3600 for key in staged])
    after = await store.create_version(uploads[2].draft("t"), uploads[2].config, uploads[2].weights)
    assert after.version == 3  # version 2 was handed out to the crashed upload and never used
    assert await store.current_version("t") == 3
    assert (await store.get_version("t", 3)).weights_bytes == uploads[2].weights
    await store.close()


async def test_redis_upload_racing_a_delete_is_a_conflict(
    redis_url: str, uploads: list[Upload], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore.from_url(redis_url, prefix=f"conflict-{uuid.uuid4().hex}:")
    await store.create_version(uploads[0].draft("t"), uploads[0].config, uploads[0].weights)
    real_commit = store._commit

    async def delete_then_commit(**kwargs: object) -> object:
        await store.delete_task("t")
        return await real_commit(**kwargs)

    monkeypatch.setattr(store, "_commit", delete_then_commit)
    with pytest.raises(Conflict, match="deleted during the upload"):
        await store.create_version(uploads[1].draft("t"), uploads[1].config, uploads[1].weights)
    assert await store.list_tasks() == {}
    await store.close()


async def test_change_events_reach_another_store_on_the_same_redis(redis_url: str, uploads: list[Upload]) -> None:
    prefix = f"events-{uuid.uuid4().hex}:"
    writer, reader = RedisStore.from_url(redis_url, prefix=prefix), RedisStore.from_url(redis_url, prefix=prefix)
    events = reader.events()
    assert (await anext(events)).kind == "resync"  # subscribed
    await writer.create_version(uploads[0].draft("t"), uploads[0].config, uploads[0].weights)
    await writer.create_version(uploads[1].draft("t"), uploads[1].config, uploads[1].weights)
    await writer.rollback("t", 1)
    await writer.delete_task("t")
    seen = [await asyncio.wait_for(anext(events), timeout=1.0) for _ in range(4)]
    assert [(e.kind, e.task, e.version) for e in seen] == [
        ("version", "t", 1), ("version", "t", 2), ("rollback", "t", 1), ("delete", "t", None)
    ]  # fmt: skip
    await events.aclose()
    await writer.close()
    await reader.close()


async def test_file_store_tells_its_own_listeners(tmp_path: Path, uploads: list[Upload]) -> None:
    store = FileStore(tmp_path)
    events = store.events()
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    await store.create_version(uploads[0].draft("t"), uploads[0].config, uploads[0].weights)
    event = await asyncio.wait_for(waiting, timeout=1.0)
    assert (event.kind, event.task, event.version) == ("version", "t", 1)
    await events.aclose()


def test_open_store_picks_the_backend_by_url(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_store(tmp_path.as_uri()), FileStore)
    assert isinstance(open_store(redis_url), RedisStore)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    default = open_store()
    assert isinstance(default, FileStore) and default.root == tmp_path / "data" / "promptswap" / "prompts"
    with pytest.raises(ValueError, match="expected file:///DIR or redis://"):
        open_store("s3://bucket")


async def test_unreachable_redis_is_store_unavailable(uploads: list[Upload]) -> None:
    from prompt_store.errors import StoreUnavailable
    from tests.redis_server import free_port

    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable) as caught:
        await store.ping()
    assert status_of(caught.value) == 503
    with pytest.raises(StoreUnavailable):
        await store.create_version(uploads[0].draft("t"), uploads[0].config, uploads[0].weights)
    await store.close()


async def stored_names(store: PromptStore) -> set[str]:
    """Every file and folder of a directory store, or every key under a Redis store's prefix."""
    if isinstance(store, FileStore):
        return {str(path.relative_to(store.root)) for path in store.root.rglob("*")}
    assert isinstance(store, RedisStore)
    return {key.decode() for key in await store.client.keys(f"{store.prefix}*")}


async def test_changes_to_a_task_that_does_not_exist_write_nothing(store: PromptStore, uploads: list[Upload]) -> None:
    await store.create_version(uploads[0].draft("real"), uploads[0].config, uploads[0].weights)
    before = await stored_names(store)
    with pytest.raises(UnknownTask):
        await store.delete_task("ghost")
    with pytest.raises(UnknownTask):
        await store.rollback("ghost", 1)
    with pytest.raises(UnknownVersion):
        await store.rollback("real", 5)
    assert await stored_names(store) == before  # on the directory store: no locks/ghost.lock


async def test_opening_the_file_store_removes_what_a_crash_left(tmp_path: Path, uploads: list[Upload]) -> None:
    store = FileStore(tmp_path)
    await store.create_version(uploads[0].draft("t"), uploads[0].config, uploads[0].weights)
    kept = await stored_names(store)
    tasks = tmp_path / "tasks"
    leftovers = [
        tasks / "t" / ".staging-0123" / "adapter_model.safetensors",  # a write cut before its rename
        tasks / "t" / ".state.json.4567",  # a state file never renamed into place
        tasks / "t" / "v2" / "record.json",  # renamed, but its state never written
        tasks / ".deleted-89ab" / "v1" / "record.json",  # a delete cut while removing the hidden folder
        tasks / "u" / ".staging-cdef" / "adapter_config.json",  # the first upload of u, cut
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    FileStore(tmp_path)
    assert await stored_names(store) == kept | {"locks/u.lock"}
    assert (await store.get_version("t", 1)).weights_bytes == uploads[0].weights
    assert await store.list_tasks() == {"t": 1}
