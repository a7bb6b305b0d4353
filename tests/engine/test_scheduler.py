"""The scheduler with plain tickets: batch size, KV budget, prefill cap, queue bound, FIFO."""

from __future__ import annotations

import pytest

from server.engine.scheduler import QueueFull, Scheduler, SchedulerConfig, Ticket
from server.errors import ContextTooLong


def tickets(*sizes: tuple[int, int]) -> list[Ticket]:
    return [Ticket(i, prefill, reserved) for i, (prefill, reserved) in enumerate(sizes)]


@pytest.mark.parametrize(
    ("config", "sizes", "admitted"),
    [
        (SchedulerConfig(max_batch_size=2), [(5, 10)] * 3, [0, 1]),
        (SchedulerConfig(max_batch_tokens=25), [(5, 10), (5, 10), (5, 10)], [0, 1]),
        (SchedulerConfig(max_prefill_tokens=12), [(5, 10), (5, 10), (5, 10)], [0, 1]),
        (SchedulerConfig(max_prefill_tokens=12), [(50, 60), (5, 10)], [0]),  # a long prompt runs alone
        (SchedulerConfig(max_batch_tokens=25), [(5, 10), (5, 20), (1, 2)], [0]),  # first come, first served
    ],
)
def test_admission_limits(config: SchedulerConfig, sizes: list[tuple[int, int]], admitted: list[int]) -> None:
    scheduler = Scheduler(config)
    for ticket in tickets(*sizes):
        scheduler.add(ticket)
    assert [t.id for t in scheduler.schedule()] == admitted
    assert len(scheduler) == len(sizes)


def test_finished_rows_make_room_and_the_queue_is_bounded() -> None:
    scheduler = Scheduler(SchedulerConfig(max_batch_size=1, max_waiting=2))
    first, second, third = tickets((1, 5), (1, 5), (1, 5))
    scheduler.add(first)
    scheduler.add(second)
    with pytest.raises(QueueFull) as caught:
        scheduler.add(third)
    assert caught.value.status_code == 429
    assert scheduler.schedule() == [first]
    assert scheduler.schedule() == []
    scheduler.finish(first.id)
    assert scheduler.schedule() == [second]
    assert scheduler.withdraw(second.id) is False  # already running
    scheduler.add(third)
    assert scheduler.withdraw(third.id) is True and len(scheduler) == 1


def test_a_request_larger_than_the_whole_budget_is_refused() -> None:
    scheduler = Scheduler(SchedulerConfig(max_batch_tokens=100))
    with pytest.raises(ContextTooLong, match="needs 101 positions"):
        scheduler.add(Ticket(0, 1, 101))
