"""Drive a runner by hand through continuous batching: rows leave mid-way and new rows join."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.engine.allocator import SlotAllocator
from server.engine.core import Runner
from server.engine.request import RowPrompt, Work

FIRST, LEAVING = 6, (1, 3, 4)  # the first six rows start; three of them leave after four tokens


@dataclass(frozen=True)
class Row:
    id: int
    input_ids: Sequence[int]
    prompt: RowPrompt

    @property
    def own_ids(self) -> list[int]:
        return self.prompt.own_token_ids(self.input_ids)


def join_and_leave(runner: Runner, rows: Sequence[Row], max_new_tokens: int) -> dict[int, list[int]]:
    """Greedy tokens per row id: rows[:6] start, 1, 3 and 4 leave after four tokens, the rest join then,
    prefilled in the same forward pass as the staying rows' decode step."""
    produced: dict[int, list[int]] = {row.id: [] for row in rows}
    capacity = sum(len(row.own_ids) + max_new_tokens for row in rows)
    cache, slots = runner.new_cache(capacity), SlotAllocator(capacity, align=1)
    segments: dict[int, int] = {}
    cached: dict[int, int] = {}

    def prefill(row: Row) -> Work:
        segment = slots.allocate(len(row.own_ids) + max_new_tokens)
        assert segment is not None
        segments[row.id], cached[row.id] = segment, 0
        return Work(row.id, row.own_ids, 0, row.prompt, segment, (len(row.own_ids) - 1,))

    def decode(row: Row) -> Work:
        return Work(row.id, produced[row.id][-1:], cached[row.id], row.prompt, segments[row.id], (0,))

    def run(works: list[Work]) -> None:
        logits = runner.forward(cache, works)
        for work, row_logits in zip(works, logits, strict=True):
            produced[work.seq_id].append(int(row_logits.argmax()))
            cached[work.seq_id] = work.start + work.num_tokens

    def leave(row: Row) -> None:
        runner.release(cache, [row.id])
        slots.free(segments.pop(row.id))

    active = list(rows[:FIRST])
    run([prefill(row) for row in active])
    for _ in range(3):
        run([decode(row) for row in active])
    for row in [row for row in active if row.id in LEAVING]:
        leave(row)
    active = [row for row in active if row.id not in LEAVING]
    run([decode(row) for row in active] + [prefill(row) for row in rows[FIRST:]])
    active += rows[FIRST:]
    while active:
        for row in [row for row in active if len(produced[row.id]) >= max_new_tokens]:
            leave(row)
        active = [row for row in active if len(produced[row.id]) < max_new_tokens]
        if active:
            run([decode(row) for row in active])
    return produced


def assert_join_and_leave(produced: dict[int, list[int]], expected: Sequence[list[int]], label: str) -> None:
    """Rows that stayed or joined got their whole answer; rows that left got its first four tokens."""
    for rid, tokens in enumerate(expected):
        want = tokens[:4] if rid in LEAVING else tokens
        assert produced[rid] == want, f"{label} request {rid}"
