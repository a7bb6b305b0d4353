"""The scheduler and the slot allocator with plain tables: batch size, KV slots, chunked prefill,
queue bound, fairness between clients, and runs of slots that merge back when rows leave."""

from __future__ import annotations

import itertools
import random

import pytest

from server.api.errors import status_of
from server.engine.allocator import SlotAllocator
from server.engine.scheduler import QueueFull, Scheduler, SchedulerConfig, Ticket
from server.errors import ContextTooLong


def tickets(*sizes: tuple[int, int], client: str = "") -> list[Ticket]:
    return [Ticket(i, prefill, reserved, client) for i, (prefill, reserved) in enumerate(sizes)]


@pytest.mark.parametrize(
    ("config", "capacity", "sizes", "admitted"),
    [
        (SchedulerConfig(max_batch_size=2), 1000, [(5, 16)] * 3, [0, 1]),
        (SchedulerConfig(), 48, [(5, 16), (5, 16), (5, 16), (5, 16)], [0, 1, 2]),  # KV slots
        (SchedulerConfig(max_prefill_tokens=12), 1000, [(5, 16), (5, 16), (5, 16)], [0, 1, 2]),  # third is chunked
        (SchedulerConfig(max_prefill_tokens=10), 1000, [(5, 16), (5, 16), (5, 16)], [0, 1]),  # budget used up
        (SchedulerConfig(), 48, [(5, 16), (5, 32), (1, 2)], [0, 1]),
        (SchedulerConfig(), 32, [(5, 16), (5, 32), (1, 2)], [0]),  # the second waits, and nobody passes it
    ],
)
def test_admission_limits(
    config: SchedulerConfig, capacity: int, sizes: list[tuple[int, int]], admitted: list[int]
) -> None:
    scheduler = Scheduler(config, capacity)
    for ticket in tickets(*sizes):
        scheduler.add(ticket)
    assert [running.ticket.id for running in scheduler.schedule().admitted] == admitted
    assert len(scheduler) == len(sizes)


def test_a_long_prompt_is_prefilled_in_chunks_while_other_rows_go_on() -> None:
    scheduler = Scheduler(SchedulerConfig(max_prefill_tokens=8), 1000)
    scheduler.add(Ticket(0, 3, 20))
    scheduler.add(Ticket(1, 20, 40))
    first = scheduler.schedule()
    assert first.chunks == {0: (0, 3), 1: (0, 5)}
    assert scheduler.schedule().chunks == {1: (5, 8)}  # row 0 now decodes, outside the prefill budget
    assert scheduler.schedule().chunks == {1: (13, 7)}
    assert scheduler.schedule().chunks == {}


def test_without_chunking_a_prompt_longer_than_the_budget_runs_alone() -> None:
    scheduler = Scheduler(SchedulerConfig(max_prefill_tokens=8), 1000, chunked_prefill=False)
    for ticket in tickets((20, 30), (2, 4)):
        scheduler.add(ticket)
    assert scheduler.schedule().chunks == {0: (0, 20)}
    assert scheduler.schedule().chunks == {1: (0, 2)}
    scheduler.add(Ticket(2, 6, 8))
    scheduler.add(Ticket(3, 6, 8))
    assert scheduler.schedule().chunks == {2: (0, 6)}  # the next whole prompt waits for the next step


def test_clients_share_the_batch() -> None:
    """One client's burst does not shut out another who comes later: the next free slot is theirs."""
    scheduler = Scheduler(SchedulerConfig(max_batch_size=4), 10_000)
    for i in range(10):
        scheduler.add(Ticket(i, 1, 16, "hog"))
    scheduler.add(Ticket(100, 1, 16, "polite"))
    assert [r.ticket.id for r in scheduler.schedule().admitted] == [0, 100, 1, 2]
    scheduler.finish(0)
    scheduler.add(Ticket(101, 1, 16, "polite"))
    assert [r.ticket.id for r in scheduler.schedule().admitted] == [101]  # before the hog's older tickets
    scheduler.finish(1)
    scheduler.add(Ticket(200, 1, 16, "third"))
    assert [r.ticket.id for r in scheduler.schedule().admitted] == [200]  # a client with no row goes first
    scheduler.finish(2)
    assert [r.ticket.id for r in scheduler.schedule().admitted] == [3]  # ties: the oldest ticket


def test_finished_rows_make_room_and_the_queue_is_bounded() -> None:
    scheduler = Scheduler(SchedulerConfig(max_batch_size=1, max_waiting=2), 100)
    first, second, third = tickets((1, 5), (1, 5), (1, 5))
    scheduler.add(first)
    scheduler.add(second)
    with pytest.raises(QueueFull) as caught:
        scheduler.add(third)
    assert status_of(caught.value) == 429
    assert [r.ticket for r in scheduler.schedule().admitted] == [first]
    assert scheduler.schedule().admitted == []
    scheduler.finish(first.id)
    assert [r.ticket for r in scheduler.schedule().admitted] == [second]
    assert scheduler.withdraw(second.id) is False  # already running
    scheduler.add(third)
    assert scheduler.withdraw(third.id) is True and len(scheduler) == 1


def test_a_request_larger_than_the_whole_pool_is_refused() -> None:
    scheduler = Scheduler(SchedulerConfig(), 96)
    with pytest.raises(ContextTooLong, match="needs 97 key/value slots"):
        scheduler.add(Ticket(0, 1, 97))


@pytest.mark.parametrize(
    ("requests", "frees", "then", "start"),
    [
        ([16, 16, 16], [], 16, 48),  # first fit after the taken runs
        ([16, 16, 16], [1], 16, 16),  # a freed run in the middle is reused
        ([16, 16, 16], [1], 32, 48),  # ... but not when it is too small
        ([16, 16, 16], [0, 1], 32, 0),  # freed neighbours merge into one run
        ([16, 16, 16], [1, 0], 32, 0),  # in either order
        ([16, 16, 16, 16], [1, 3, 2], 48, 16),  # and with the free tail
        ([5], [], 3, 16),  # sizes round up to the alignment
    ],
)
def test_slot_runs(requests: list[int], frees: list[int], then: int, start: int) -> None:
    slots = SlotAllocator(128, align=16)
    starts = [slots.allocate(size) for size in requests]
    for index in frees:
        slots.free(starts[index])  # type: ignore[arg-type]
    assert slots.allocate(then) == start


def test_slots_never_overlap_and_all_merge_back() -> None:
    slots = SlotAllocator(1024, align=8)
    taken: dict[int, int] = {}
    rng = random.Random(3)
    for _ in range(2000):
        if taken and rng.random() < 0.5:
            start = rng.choice(list(taken))
            del taken[start]
            slots.free(start)
            continue
        size = rng.randint(1, 100)
        start = slots.allocate(size)
        if start is None:
            assert slots.largest_free < slots.size_of(size)
            continue
        runs = sorted([*taken.items(), (start, slots.size_of(size))])
        assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(runs))
        assert start + slots.size_of(size) <= 1024
        taken[start] = slots.size_of(size)
    for start in list(taken):
        slots.free(start)
    assert slots.used == 0 and slots.largest_free == 1024


@pytest.mark.parametrize(("capacity", "align"), [(0, 16), (64, 0), (-1, -1)])
def test_an_empty_pool_or_alignment_is_refused(capacity: int, align: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        SlotAllocator(capacity, align)


def test_finishing_a_row_twice_or_one_never_admitted_changes_nothing() -> None:
    scheduler = Scheduler(SchedulerConfig(max_batch_size=4, max_prefill_tokens=64), 64, chunked_prefill=False)
    scheduler.add(Ticket(1, 8, 16))
    scheduler.schedule()
    scheduler.finish(1)
    scheduler.finish(1)  # cancelled and finished in one step: the second call must not free twice
    scheduler.finish(99)
    assert scheduler.slots.used == 0 and not scheduler.running
    scheduler.add(Ticket(2, 8, 64))  # the whole pool is one free run again
    assert [running.ticket.id for running in scheduler.schedule().admitted] == [2]


def test_two_long_prompts_share_one_prefill_budget() -> None:
    """Chunks of rows still prefilling come out of the same budget, step after step."""
    scheduler = Scheduler(SchedulerConfig(max_prefill_tokens=8), 1000)
    scheduler.add(Ticket(0, 20, 40))
    scheduler.add(Ticket(1, 20, 40))
    steps = [scheduler.schedule().chunks for _ in range(6)]
    assert steps[:2] == [{0: (0, 8)}, {0: (8, 8)}]
    assert all(sum(length for _, length in chunks.values()) <= 8 for chunks in steps)
    assert sum(length for chunks in steps for start, length in chunks.values()) == 40


def test_the_smallest_pool_and_alignment_work() -> None:
    slots = SlotAllocator(1, align=1)
    assert slots.allocate(1) == 0 and slots.allocate(1) is None
