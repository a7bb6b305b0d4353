"""The device cache with plain objects: budget, least-recently-used order, pins."""

from __future__ import annotations

from dataclasses import dataclass

from server.prompts.pool import DevicePool


@dataclass(frozen=True)
class Form:
    name: str
    nbytes: int


def test_least_recently_used_is_evicted_first_within_the_budget() -> None:
    pool: DevicePool[str, Form] = DevicePool(budget_bytes=300)
    for name in "abc":
        pool.put(name, Form(name, 100))
    assert pool.acquire("a") is not None  # a is now the most recently used
    pool.release("a")
    pool.put("d", Form("d", 100))
    assert pool.lru_keys() == ["c", "a", "d"]
    assert "b" not in pool and pool.nbytes == 300
    assert (pool.stats.hits, pool.stats.evictions) == (1, 1)


def test_pinned_forms_are_never_evicted_and_go_once_released() -> None:
    pool: DevicePool[str, Form] = DevicePool(budget_bytes=250)
    pool.put("a", Form("a", 100), pinned=True)
    pool.put("b", Form("b", 100), pinned=True)
    pool.put("c", Form("c", 100), pinned=True)  # over budget: everything is in use
    assert pool.lru_keys() == ["a", "b", "c"] and pool.nbytes == 300
    pool.put("d", Form("d", 50))  # the only unpinned form is the one evicted
    assert pool.lru_keys() == ["a", "b", "c"]
    pool.release("b")
    assert pool.lru_keys() == ["a", "c"] and pool.nbytes == 200


def test_a_form_pinned_twice_needs_two_releases() -> None:
    pool: DevicePool[str, Form] = DevicePool(budget_bytes=150)
    pool.put("a", Form("a", 100), pinned=True)
    assert pool.acquire("a") == Form("a", 100)
    pool.put("b", Form("b", 100))  # does not fit next to a pinned a
    assert pool.lru_keys() == ["a"]
    pool.release("a")
    pool.put("b", Form("b", 100))
    assert pool.lru_keys() == ["a"]  # still pinned once
    pool.release("a")
    pool.put("b", Form("b", 100))
    assert pool.lru_keys() == ["b"]


def test_misses_discards_and_racing_loaders() -> None:
    pool: DevicePool[str, Form] = DevicePool(budget_bytes=1000)
    assert pool.acquire("x") is None and pool.stats.misses == 1
    first = pool.put("x", Form("x1", 10), pinned=True)
    second = pool.put("x", Form("x2", 10), pinned=True)  # a second loader of the same key
    assert first is second and pool.nbytes == 10
    pool.discard("x")
    assert "x" not in pool and pool.nbytes == 0
    pool.release("x")  # a request finishing with a discarded form is harmless
    assert pool.peek("x") is None
