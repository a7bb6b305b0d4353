"""Which slots of the KV pool each running row owns. Plain Python, no torch.

A row owns one contiguous run of slots, sized when it is admitted (its input plus the tokens it
may generate): the attention reads a row's keys as one slice, with no copy. Runs are taken first
fit from a sorted list of free runs; a freed run merges with free neighbours at once, so when
every row has left the whole pool is one run again. Sizes are rounded up to `align` slots so that
runs end on a block boundary and small leftovers do not pile up.

A paged kernel would see each run as a block table of consecutive blocks (docs/engine.md).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass
class Run:
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


class SlotAllocator:
    def __init__(self, capacity: int, align: int = 16) -> None:
        if capacity < 1 or align < 1:
            raise ValueError(f"capacity and align must be positive, found {capacity} and {align}")
        self.capacity = capacity
        self.align = align
        self._free: list[Run] = [Run(0, capacity)]  # sorted by start, never adjacent to each other
        self._taken: dict[int, int] = {}  # start -> length of every run handed out

    @property
    def used(self) -> int:
        return sum(self._taken.values())

    @property
    def largest_free(self) -> int:
        return max((run.length for run in self._free), default=0)

    def size_of(self, num_slots: int) -> int:
        """Slots a request for `num_slots` really takes (rounded up to the alignment)."""
        return -(-num_slots // self.align) * self.align

    def fits(self, num_slots: int) -> bool:
        return self.size_of(num_slots) <= self.largest_free

    def allocate(self, num_slots: int) -> int | None:
        """The start of a free run of (at least) `num_slots` slots, now taken; None if none is free."""
        size = self.size_of(num_slots)
        for index, run in enumerate(self._free):
            if run.length >= size:
                start = run.start
                if run.length == size:
                    del self._free[index]
                else:
                    run.start, run.length = run.start + size, run.length - size
                self._taken[start] = size
                return start
        return None

    def free(self, start: int) -> None:
        """Give back the run that `allocate` returned at `start`."""
        length = self._taken.pop(start)
        index = bisect.bisect_left([run.start for run in self._free], start)
        run = Run(start, length)
        after = self._free[index] if index < len(self._free) else None
        before = self._free[index - 1] if index > 0 else None
        if after is not None and run.end == after.start:
            run.length += after.length
            del self._free[index]
        if before is not None and before.end == run.start:
            before.length += run.length
        else:
            self._free.insert(index, run)
