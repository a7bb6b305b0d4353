"""Which waiting requests join the running batch, and how much of each prompt a step prefills.
Plain Python, no torch.

Policy:
- at most `max_batch_size` rows run at once;
- a row is admitted only with its own run of KV slots (input + the tokens it may generate, see
  `allocator.py`), so a running row never runs out of room and the pool never grows;
- one step prefills at most `max_prefill_tokens` prompt tokens: a long prompt is prefilled in
  chunks over several steps while the running rows keep decoding (a runner that cannot chunk
  takes a whole prompt per step; one longer than the cap then runs alone);
- clients share the batch: the next row admitted is the oldest request of the client with the
  fewest rows running, so one client's burst cannot shut the others out. Within a client, first
  come, first served; a request that does not fit yet is never skipped, so large ones are not starved.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from prompt_store.errors import UserError
from server.engine.allocator import SlotAllocator
from server.errors import ContextTooLong


class QueueFull(UserError):
    """The waiting queue is full; retry later."""

    error_type = "queue_full"


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch_size: int = 32
    max_prefill_tokens: int = 4096
    max_waiting: int = 256
    kv_cache_bytes: int = 2 << 30  # the rows' own keys and values; task prefixes live in the prompt cache
    max_batch_tokens: int | None = None  # KV slots at most, whatever the bytes would hold


@dataclass(frozen=True)
class Ticket:
    """What the scheduler needs to know about a request."""

    id: int
    prefill_tokens: int  # own tokens to run before the first sample (a shared prefix is precomputed)
    reserved_tokens: int  # KV slots the row may fill: prefill tokens + max_new_tokens
    client: str = ""


@dataclass
class Running:
    ticket: Ticket
    segment: int  # first slot of the row's run
    prefilled: int = 0

    @property
    def prefilling(self) -> bool:
        return self.prefilled < self.ticket.prefill_tokens


@dataclass
class Plan:
    """One step: rows admitted now (with their slots), and prompt tokens to prefill per row id."""

    admitted: list[Running] = field(default_factory=list)
    chunks: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (start, number of tokens)


class Scheduler:
    def __init__(self, config: SchedulerConfig, capacity: int, chunked_prefill: bool = True) -> None:
        self.config = config
        self.slots = SlotAllocator(capacity)
        self.chunked_prefill = chunked_prefill
        self.waiting: OrderedDict[str, deque[Ticket]] = OrderedDict()  # client -> its tickets, oldest first
        self.running: dict[int, Running] = {}  # in admission order
        self._lock = threading.Lock()  # submissions arrive from the event loop, steps run in the engine thread

    @property
    def num_waiting(self) -> int:
        return sum(len(queue) for queue in self.waiting.values())

    @property
    def reserved_tokens(self) -> int:
        return self.slots.used

    def add(self, ticket: Ticket) -> None:
        if self.slots.size_of(ticket.reserved_tokens) > self.slots.capacity:
            raise ContextTooLong(
                f"the request needs {ticket.reserved_tokens} key/value slots (input + max_new_tokens); "
                f"this server holds at most {self.slots.capacity} for all running requests"
            )
        with self._lock:
            if self.num_waiting >= self.config.max_waiting:
                raise QueueFull(f"{self.num_waiting} requests are waiting, the limit; retry shortly")
            self.waiting.setdefault(ticket.client, deque()).append(ticket)

    def schedule(self) -> Plan:
        """Admit what fits and hand out this step's prefill budget, oldest rows first."""
        plan = Plan()
        with self._lock:
            budget = self.config.max_prefill_tokens
            for running in self.running.values():
                budget -= self._chunk(plan, running, budget)
            while budget > 0 and len(self.running) < self.config.max_batch_size:
                ticket = self._next_waiting()
                if ticket is None:
                    break
                if not self.chunked_prefill and plan.chunks and ticket.prefill_tokens > budget:
                    break  # a whole prompt that does not fit what is left waits for the next step
                segment = self.slots.allocate(ticket.reserved_tokens)
                if segment is None:
                    break
                self._pop(ticket)
                running = Running(ticket, segment)
                self.running[ticket.id] = running
                plan.admitted.append(running)
                budget -= self._chunk(plan, running, budget)
        return plan

    def _chunk(self, plan: Plan, running: Running, budget: int) -> int:
        """Give `running` its next prompt tokens if it is still prefilling; returns how many."""
        if not running.prefilling or budget <= 0:
            return 0
        remaining = running.ticket.prefill_tokens - running.prefilled
        size = min(remaining, budget) if self.chunked_prefill else remaining
        if size > budget and plan.chunks:
            return 0
        plan.chunks[running.ticket.id] = (running.prefilled, size)
        running.prefilled += size
        return size

    def _next_waiting(self) -> Ticket | None:
        """The oldest ticket of the client with the fewest running rows (ties: the oldest ticket)."""
        if not self.waiting:
            return None
        counts: dict[str, int] = {}
        for running in self.running.values():
            counts[running.ticket.client] = counts.get(running.ticket.client, 0) + 1
        client = min(self.waiting, key=lambda c: (counts.get(c, 0), self.waiting[c][0].id))
        return self.waiting[client][0]

    def _pop(self, ticket: Ticket) -> None:
        queue = self.waiting[ticket.client]
        queue.popleft()
        if not queue:
            del self.waiting[ticket.client]

    def finish(self, ticket_id: int) -> None:
        """A running request left the batch (finished or cancelled): its slots are free at once."""
        with self._lock:
            running = self.running.pop(ticket_id, None)
            if running is not None:
                self.slots.free(running.segment)

    def withdraw(self, ticket_id: int) -> bool:
        """Remove a request that is still waiting; False if it already runs (or is gone)."""
        with self._lock:
            for ticket in self._waiting_tickets():
                if ticket.id == ticket_id:
                    self.waiting[ticket.client].remove(ticket)
                    if not self.waiting[ticket.client]:
                        del self.waiting[ticket.client]
                    return True
            return False

    def _waiting_tickets(self) -> Iterator[Ticket]:
        for queue in self.waiting.values():
            yield from queue

    def __len__(self) -> int:
        return self.num_waiting + len(self.running)
