"""One engine step at a time: admit waiting requests, sample every row, decode.

Each `step()` (1) drops cancelled rows, (2) prefills newly admitted requests in one pass and
merges them into the running batch, (3) samples one token for every row, emits events and
drops finished rows at once, (4) runs one decode pass for the rows that go on. The core is
synchronous and deterministic, so tests drive it step by step; `AsyncEngine` runs it in a
thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from server.engine.batch import Batch
from server.engine.detokenizer import TextStream
from server.engine.metrics import EngineMetrics
from server.engine.request import Event, Request, Usage
from server.engine.runner import PrefillRow, RowPrompt
from server.engine.sampling import RowSampler, sample
from server.engine.scheduler import Scheduler, SchedulerConfig, Ticket

if TYPE_CHECKING:  # the engine owns a core per run; the core only calls back into it
    from server.engine.engine import Engine


@dataclass
class Sequence:
    id: int
    request: Request
    prompt: RowPrompt
    sampler: RowSampler
    text: TextStream | None
    token_ids: list[int] = field(default_factory=list)
    cancelled: bool = False

    @property
    def usage(self) -> Usage:
        return Usage(len(self.request.input_ids), self.prompt.num_virtual_tokens, len(self.token_ids))

    def append(self, token_id: int, eos_token_ids: frozenset[int]) -> tuple[str, str | None]:
        """Add a generated token; return its new text and the finish reason, if this ends it."""
        params = self.request.params
        self.token_ids.append(token_id)
        text = self.text.push(token_id) if self.text else ""
        if self.text and self.text.stopped:
            return text, "stop"
        reason = None
        if params.stop_at_eos and token_id in eos_token_ids:
            reason = "eos"
        elif len(self.token_ids) >= params.max_new_tokens:
            reason = "length"
        if reason and self.text:
            text += self.text.finish()
        return text, reason


class EngineCore:
    def __init__(self, engine: Engine, config: SchedulerConfig, metrics: EngineMetrics | None = None) -> None:
        self.engine = engine
        self.scheduler = Scheduler(config)
        self.metrics = metrics or EngineMetrics()
        self.sequences: dict[int, Sequence] = {}
        self.batch: Batch | None = None
        self.logits: torch.Tensor | None = None  # [B, V] next-token logits of the batch's rows
        self._ids = itertools.count()
        self._lock = threading.Lock()

    @property
    def has_work(self) -> bool:
        return bool(self.sequences)

    def add(self, request: Request) -> int:
        """Check and queue a request; raises a typed error (bad request, too long, queue full)."""
        prompt = self.engine.check(request)
        tokenizer = self.engine.tokenizer
        # A decoder's text starts fresh: the input went to the encoder, so it is no context for decoding.
        context = () if self.engine.base.spec.is_encoder_decoder else request.input_ids
        text = TextStream(tokenizer, context, request.params.stop) if tokenizer else None
        virtual = prompt.num_virtual_tokens
        with self._lock:
            sequence = Sequence(next(self._ids), request, prompt, RowSampler(request.params), text)
            ticket = Ticket(
                sequence.id,
                prefill_tokens=len(request.input_ids),
                reserved_tokens=virtual + len(request.input_ids) + request.params.max_new_tokens,
            )
            self.scheduler.add(ticket)
            self.sequences[sequence.id] = sequence
        self.metrics.queue_depth.set(len(self.scheduler.waiting))
        return sequence.id

    def cancel(self, request_id: int) -> None:
        """The request leaves at the next step; its events end with finish_reason 'cancelled'."""
        with self._lock:
            sequence = self.sequences.get(request_id)
            if sequence is not None:
                sequence.cancelled = True

    def step(self) -> list[Event]:
        events: list[Event] = []
        self._drop_cancelled(events)
        self._admit()
        if self.batch is None or self.logits is None:  # every row left (cancelled) or none came
            self.metrics.batch_size.set(0)
            return events
        batch = self.batch
        rows = [self.sequences[request_id] for request_id in batch.request_ids]
        tokens = sample(self.logits, [row.sampler for row in rows])  # [B]
        keep = []
        eos = self.engine.base.eos_token_ids
        for index, (sequence, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            text, reason = sequence.append(token, eos)
            events.append(Event(sequence.id, token, text))
            if reason is None:
                keep.append(index)
            else:
                events.append(self._finish(sequence, reason))
        self.metrics.generated_tokens.inc(len(rows))
        if not keep:
            self.batch = self.logits = None
        else:
            if len(keep) < len(batch):
                batch, tokens = batch.filter(keep), tokens[keep]
            start = time.perf_counter()
            self.batch, self.logits = self.engine.runner.decode(batch, tokens)
            self.metrics.decode_seconds.observe(time.perf_counter() - start)
        self.metrics.batch_size.set(len(self.batch) if self.batch else 0)
        return events

    def abort(self, reason: str = "error") -> list[Event]:
        """End every request now (the engine failed); the engine stays usable."""
        self.batch = self.logits = None
        events = []
        for sequence in list(self.sequences.values()):
            self.scheduler.withdraw(sequence.id)
            events.append(self._finish(sequence, reason))
        return events

    def _admit(self) -> None:
        admitted = self.scheduler.schedule()
        self.metrics.queue_depth.set(len(self.scheduler.waiting))
        if not admitted:
            return
        rows = [self.sequences[ticket.id] for ticket in admitted]
        start = time.perf_counter()
        batch, logits = self.engine.runner.prefill([PrefillRow(s.id, s.request.input_ids, s.prompt) for s in rows])
        self.metrics.prefill_seconds.observe(time.perf_counter() - start)
        self.metrics.prefill_tokens.inc(sum(ticket.prefill_tokens for ticket in admitted))
        if self.batch is None or self.logits is None:
            self.batch, self.logits = batch, logits
        else:
            self.batch = type(self.batch).concatenate([self.batch, batch])
            self.logits = torch.cat([self.logits, logits])

    def _drop_cancelled(self, events: list[Event]) -> None:
        with self._lock:
            cancelled = [s for s in self.sequences.values() if s.cancelled]
        if not cancelled:
            return
        for sequence in cancelled:
            self.scheduler.withdraw(sequence.id)
            events.append(self._finish(sequence, "cancelled"))
        if self.batch is not None and self.logits is not None:
            keep = [i for i, request_id in enumerate(self.batch.request_ids) if request_id in self.sequences]
            if not keep:
                self.batch = self.logits = None
            elif len(keep) < len(self.batch):
                self.batch, self.logits = self.batch.filter(keep), self.logits[keep]

    def _finish(self, sequence: Sequence, reason: str) -> Event:
        self.scheduler.finish(sequence.id)
        with self._lock:
            self.sequences.pop(sequence.id, None)
        self.metrics.finished.labels(reason).inc()
        if sequence.request.on_done is not None:
            sequence.request.on_done()
        return Event(sequence.id, finish_reason=reason, usage=sequence.usage)
