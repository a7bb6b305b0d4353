"""Which waiting requests join the running batch at the next step. Plain Python, no torch.

Policy (first come, first served; nobody is skipped):
- at most `max_batch_size` rows run at once;
- the key/value budget `max_batch_tokens` reserves, per row, virtual + input + max_new_tokens
  positions, so a running row can never run out of room;
- one step prefills at most `max_prefill_tokens` new positions, so a burst of long prompts
  delays the running rows' next token by one bounded prefill, not by all of them. A single
  request longer than the cap is admitted alone.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from prompt_store.errors import UserError
from server.errors import ContextTooLong


class QueueFull(UserError):
    """The waiting queue is full; retry later (HTTP 429)."""

    error_type = "queue_full"
    status_code = 429


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch_size: int = 32
    max_batch_tokens: int = 65536
    max_prefill_tokens: int = 4096
    max_waiting: int = 256


@dataclass(frozen=True)
class Ticket:
    """What the scheduler needs to know about a request."""

    id: int
    prefill_tokens: int  # input tokens to run now (virtual tokens are precomputed)
    reserved_tokens: int  # virtual + input + max_new_tokens


class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.waiting: deque[Ticket] = deque()
        self.running: dict[int, Ticket] = {}
        self._lock = threading.Lock()  # submissions arrive from the event loop, steps run in the engine thread

    @property
    def reserved_tokens(self) -> int:
        return sum(ticket.reserved_tokens for ticket in self.running.values())

    def add(self, ticket: Ticket) -> None:
        if ticket.reserved_tokens > self.config.max_batch_tokens:
            raise ContextTooLong(
                f"the request needs {ticket.reserved_tokens} positions (virtual + input + max_new_tokens); "
                f"this server runs at most {self.config.max_batch_tokens} per batch"
            )
        with self._lock:
            if len(self.waiting) >= self.config.max_waiting:
                raise QueueFull(f"{len(self.waiting)} requests are waiting, the limit; retry shortly")
            self.waiting.append(ticket)

    def schedule(self) -> list[Ticket]:
        """Move the requests that fit from waiting to running, oldest first."""
        config = self.config
        admitted: list[Ticket] = []
        with self._lock:
            reserved, prefill = self.reserved_tokens, 0
            while self.waiting:
                ticket = self.waiting[0]
                if len(self.running) + len(admitted) >= config.max_batch_size:
                    break
                if reserved + ticket.reserved_tokens > config.max_batch_tokens:
                    break
                if admitted and prefill + ticket.prefill_tokens > config.max_prefill_tokens:
                    break
                self.waiting.popleft()
                admitted.append(ticket)
                reserved += ticket.reserved_tokens
                prefill += ticket.prefill_tokens
            for ticket in admitted:
                self.running[ticket.id] = ticket
        return admitted

    def finish(self, ticket_id: int) -> None:
        """A running request left the batch (finished or cancelled)."""
        with self._lock:
            self.running.pop(ticket_id, None)

    def withdraw(self, ticket_id: int) -> bool:
        """Remove a request that is still waiting; False if it already runs (or is gone)."""
        with self._lock:
            for ticket in self.waiting:
                if ticket.id == ticket_id:
                    self.waiting.remove(ticket)
                    return True
            return False

    def __len__(self) -> int:
        return len(self.waiting) + len(self.running)
