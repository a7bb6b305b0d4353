"""The directory backend (the default).

Layout under the root:

    tasks/<task>/state.json        {"current": 3, "versions": [1, 2, 3]}: what is visible
    tasks/<task>/v3/               adapter_config.json, adapter_model.safetensors, record.json
    locks/<task>.lock              flock'd by every writer of <task>, across threads and processes

A version is written into a staging folder, fsynced, renamed to `vN`, and only then made
visible by atomically replacing `state.json`. A crash at any point leaves either the old state
or the new one; a `vN` folder that `state.json` does not list is invisible. What a crash leaves
behind (staging folders, temporary state files, unlisted versions, a deleted task's folder) is
removed when the store is opened, each task under its lock.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from prompt_store.errors import StoreFull, StoreUnavailable, UnknownTask, UnknownVersion
from prompt_store.records import TASK_NAME, ChangeEvent, VersionRecord, check_task_name
from prompt_store.store import PromptStore, StoredVersion

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
RECORD_FILE = "record.json"
STATE_FILE = "state.json"
STAGING_PREFIX, TRASH_PREFIX = ".staging-", ".deleted-"

_replace = os.replace  # the commit step; tests inject failures here
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class FileStore(PromptStore):
    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        (self.root / "tasks").mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()

    @classmethod
    def from_url(cls, url: str) -> FileStore:
        return cls(unquote(urlparse(url).path))

    # The async interface runs each blocking operation in a worker thread.

    async def create_version(self, draft: VersionRecord, config_bytes: bytes, weights_bytes: bytes) -> VersionRecord:
        record = await asyncio.to_thread(self._create, draft, config_bytes, weights_bytes)
        self._notify(ChangeEvent(kind="version", task=record.task, version=record.version))
        return record

    async def get_version(self, task: str, version: int) -> StoredVersion:
        return await asyncio.to_thread(self._get_version, task, version)

    async def get_record(self, task: str, version: int) -> VersionRecord:
        return await asyncio.to_thread(self._get_record, task, version)

    async def current_version(self, task: str) -> int:
        return int((await asyncio.to_thread(self._visible_state, task))["current"])

    async def list_versions(self, task: str) -> list[VersionRecord]:
        state = await asyncio.to_thread(self._visible_state, task)
        return [await self.get_record(task, version) for version in state["versions"]]

    async def list_tasks(self) -> dict[str, int]:
        return await asyncio.to_thread(self._list_tasks)

    async def rollback(self, task: str, version: int) -> VersionRecord:
        record = await asyncio.to_thread(self._rollback, task, version)
        self._notify(ChangeEvent(kind="rollback", task=task, version=version))
        return record

    async def delete_task(self, task: str) -> None:
        await asyncio.to_thread(self._delete, task)
        self._notify(ChangeEvent(kind="delete", task=task))

    async def ping(self) -> None:
        if not os.access(self.root / "tasks", os.R_OK | os.W_OK | os.X_OK):
            raise StoreUnavailable("the prompt directory is not readable and writable")

    # Blocking implementation.

    def _task_dir(self, task: str) -> Path:
        return self.root / "tasks" / check_task_name(task)

    @contextmanager
    def _locked(self, task: str) -> Iterator[None]:
        with open(self.root / "locks" / f"{check_task_name(task)}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _state(self, task: str) -> dict | None:
        try:
            return json.loads((self._task_dir(task) / STATE_FILE).read_bytes())
        except FileNotFoundError:
            return None

    def _visible_state(self, task: str) -> dict:
        state = self._state(task)
        if state is None:
            raise UnknownTask(f"task {task!r} does not exist")
        return state

    def _write_state(self, task: str, state: dict) -> None:
        folder = self._task_dir(task)
        temporary = folder / f".{STATE_FILE}.{uuid.uuid4().hex}"
        _write_synced(temporary, json.dumps(state).encode())
        try:
            _replace(temporary, folder / STATE_FILE)
        finally:
            temporary.unlink(missing_ok=True)
        _sync_dir(folder)

    def _create(self, draft: VersionRecord, config_bytes: bytes, weights_bytes: bytes) -> VersionRecord:
        try:
            return self._write_version(draft, config_bytes, weights_bytes)
        except OSError as error:
            if error.errno in _FULL:  # what was written is already removed; the old state stays current
                raise StoreFull("the prompt store's disk is full: nothing was stored; free space and retry") from None
            raise

    def _write_version(self, draft: VersionRecord, config_bytes: bytes, weights_bytes: bytes) -> VersionRecord:
        task = draft.task
        with self._locked(task):
            folder = self._task_dir(task)
            folder.mkdir(exist_ok=True)
            state = self._state(task) or {"current": 0, "versions": []}
            version = max(state["versions"], default=0) + 1
            record = draft.model_copy(update={"version": version, "created_at": time.time()})
            staging = folder / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
            try:
                staging.mkdir()
                _write_synced(staging / CONFIG_FILE, config_bytes)
                _write_synced(staging / WEIGHTS_FILE, weights_bytes)
                _write_synced(staging / RECORD_FILE, record.to_json())
                target = folder / f"v{version}"
                shutil.rmtree(target, ignore_errors=True)  # left by a crash before its state was written
                _replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            _sync_dir(folder)
            self._write_state(task, {"current": version, "versions": [*state["versions"], version]})
        return record

    def _version_dir(self, task: str, version: int) -> Path:
        state = self._visible_state(task)
        if version not in state["versions"]:
            raise UnknownVersion(f"task {task!r} has no version {version} (versions: {state['versions']})")
        return self._task_dir(task) / f"v{version}"

    def _get_record(self, task: str, version: int) -> VersionRecord:
        return VersionRecord.from_json((self._version_dir(task, version) / RECORD_FILE).read_bytes())

    def _get_version(self, task: str, version: int) -> StoredVersion:
        folder = self._version_dir(task, version)
        return StoredVersion(
            record=VersionRecord.from_json((folder / RECORD_FILE).read_bytes()),
            config_bytes=(folder / CONFIG_FILE).read_bytes(),
            weights_bytes=(folder / WEIGHTS_FILE).read_bytes(),
        )

    def _list_tasks(self) -> dict[str, int]:
        tasks = {}
        for folder in sorted((self.root / "tasks").iterdir()):
            state = self._state(folder.name) if not folder.name.startswith(".") else None
            if state is not None:
                tasks[folder.name] = int(state["current"])
        return tasks

    def _rollback(self, task: str, version: int) -> VersionRecord:
        self._visible_state(task)  # a task that does not exist gets no lock file
        with self._locked(task):
            record = self._get_record(task, version)
            state = self._visible_state(task)
            self._write_state(task, {**state, "current": version})
        return record

    def _delete(self, task: str) -> None:
        self._visible_state(task)  # a task that does not exist gets no lock file
        with self._locked(task):
            folder = self._task_dir(task)
            if self._state(task) is None:
                raise UnknownTask(f"task {task!r} does not exist")
            trash = self.root / "tasks" / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
            _replace(folder, trash)  # one atomic step hides the whole task
            _sync_dir(self.root / "tasks")
            shutil.rmtree(trash, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Remove what crashed writers left. A live writer of another process holds the task's lock
        while it has anything unfinished on disk, so taking the lock makes the cleanup safe."""
        for folder in sorted((self.root / "tasks").iterdir()):
            if folder.name.startswith(TRASH_PREFIX):
                shutil.rmtree(folder, ignore_errors=True)  # hidden already: the delete had committed
            elif TASK_NAME.fullmatch(folder.name):
                with self._locked(folder.name):
                    self._remove_task_leftovers(folder)

    def _remove_task_leftovers(self, folder: Path) -> None:
        state = self._state(folder.name)
        listed = {f"v{version}" for version in state["versions"]} if state is not None else set()
        for entry in folder.iterdir():
            if entry.name in listed or entry.name == STATE_FILE:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)  # a staging folder, or a version never made visible
            else:
                entry.unlink(missing_ok=True)  # a temporary state file
        if state is None:
            shutil.rmtree(folder, ignore_errors=True)  # the task's first upload never committed


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
