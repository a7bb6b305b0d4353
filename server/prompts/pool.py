"""The device cache: runtime forms under a byte budget, least recently used evicted first.

Pure Python (no torch), so it is tested with plain objects. A form in use is pinned by a
reference count and never evicted; while pinned forms alone exceed the budget the pool stays
over it, and evicts the moment they are released.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Sized)


@dataclass
class _Entry(Generic[V]):
    value: V
    pins: int = 0


@dataclass
class PoolStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class DevicePool(Generic[K, V]):
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.stats = PoolStats()
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()  # least recently used first
        self._nbytes = 0
        self._lock = threading.Lock()  # engine threads release while the event loop acquires

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def lru_keys(self) -> list[K]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._entries)

    def peek(self, key: K) -> V | None:
        """The value for `key` without pinning it or counting a hit."""
        with self._lock:
            entry = self._entries.get(key)
            return entry.value if entry else None

    def acquire(self, key: K) -> V | None:
        """Pin and return the value for `key`, or None on a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            self.stats.hits += 1
            entry.pins += 1
            self._entries.move_to_end(key)
            return entry.value

    def put(self, key: K, value: V, pinned: bool = False) -> V:
        """Insert `value` (pinned once if asked), evicting unpinned forms to fit the budget."""
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None:  # two loaders raced: keep the first, pin it as asked
                existing.pins += int(pinned)
                self._entries.move_to_end(key)
                return existing.value
            self._entries[key] = _Entry(value, pins=int(pinned))
            self._nbytes += value.nbytes
            self._evict()
            return value

    def release(self, key: K) -> None:
        """Unpin once; a key that was discarded meanwhile is ignored."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.pins > 0:
                entry.pins -= 1
                self._evict()

    def discard(self, key: K) -> None:
        """Forget `key` now. A request holding the value keeps using it; nothing new gets it."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._nbytes -= entry.value.nbytes

    def _evict(self) -> None:
        for key in list(self._entries):
            if self._nbytes <= self.budget_bytes:
                return
            entry = self._entries[key]
            if entry.pins == 0:
                del self._entries[key]
                self._nbytes -= entry.value.nbytes
                self.stats.evictions += 1
