"""The registry interface, and `open_store(url)` that picks a backend by URL scheme."""

from __future__ import annotations

import asyncio
import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from prompt_store.records import ChangeEvent, VersionRecord


@dataclass(frozen=True)
class StoredVersion:
    record: VersionRecord
    config_bytes: bytes  # adapter_config.json as uploaded
    weights_bytes: bytes  # adapter_model.safetensors as uploaded


class PromptStore(ABC):
    """Task versions 1, 2, 3, …, each immutable, and one current pointer per task.

    Every method validates the task name; a missing task or version raises `UnknownTask` or
    `UnknownVersion`, an unreachable backend `StoreUnavailable`.
    """

    shares_events = False  # True where every replica sees every change event (so pointers may be cached)

    def __init__(self) -> None:
        self._listeners: list[asyncio.Queue[ChangeEvent]] = []

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> PromptStore: ...

    @abstractmethod
    async def create_version(self, draft: VersionRecord, config_bytes: bytes, weights_bytes: bytes) -> VersionRecord:
        """Store the next version of `draft.task` and make it current; returns the committed record."""

    @abstractmethod
    async def get_version(self, task: str, version: int) -> StoredVersion: ...

    @abstractmethod
    async def get_record(self, task: str, version: int) -> VersionRecord: ...

    @abstractmethod
    async def current_version(self, task: str) -> int: ...

    @abstractmethod
    async def list_versions(self, task: str) -> list[VersionRecord]:
        """Every version of `task`, oldest first."""

    @abstractmethod
    async def list_tasks(self) -> dict[str, int]:
        """Every task and its current version."""

    @abstractmethod
    async def rollback(self, task: str, version: int) -> VersionRecord:
        """Make an existing version current again."""

    @abstractmethod
    async def delete_task(self, task: str) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the backend answers."""

    async def close(self) -> None:  # noqa: B027  (most backends hold nothing to release)
        """Release connections."""

    async def events(self) -> AsyncIterator[ChangeEvent]:
        """Changes made through this store instance (and, for shared backends, by every other one)."""
        queue: asyncio.Queue[ChangeEvent] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(queue)

    def _notify(self, event: ChangeEvent) -> None:
        for queue in self._listeners:
            queue.put_nowait(event)


BACKENDS = {"file": "prompt_store.file_store:FileStore", "redis": "prompt_store.redis_store:RedisStore"}


def default_store_url() -> str:
    """A per-user data directory: $XDG_DATA_HOME/promptswap/prompts, else ~/.local/share/…"""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(base) / "promptswap" / "prompts").as_uri()


def open_store(url: str | None = None) -> PromptStore:
    """`file:///DIR` (default: a per-user directory) or `redis://HOST:PORT/DB`."""
    url = url or default_store_url()
    scheme = urlparse(url).scheme
    if scheme == "rediss":
        scheme = "redis"
    if scheme not in BACKENDS:
        raise ValueError(f"store URL {url!r}: expected file:///DIR or redis://HOST:PORT/DB")
    module_name, class_name = BACKENDS[scheme].split(":")
    backend: type[PromptStore] = getattr(importlib.import_module(module_name), class_name)
    return backend.from_url(url)
