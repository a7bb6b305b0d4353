"""One engine step at a time: admit, run one forward for every row's part, sample, emit.

Each `step()` (1) drops cancelled rows, (2) asks the scheduler which waiting requests join and
how much of each prompt to prefill, (3) runs one forward over every row's part of the step (a
prompt chunk, the last sampled token, or continuations to score), (4) samples the rows that asked
for logits, emits events and frees finished rows at once. The core is synchronous and
deterministic, so tests drive it step by step; `AsyncEngine` runs it in a thread.

A step that fails is run again without the rows that make it fail, which alone end with "error".
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import llguidance
import torch

from server.engine.constraints import Grammars
from server.engine.detokenizer import TextStream, Tokenizer
from server.engine.logits import RowState, TokenLogprob, adjust, token_logprobs
from server.engine.metrics import EngineMetrics
from server.engine.request import Event, Request, RowPrompt, Timing, Usage, Work
from server.engine.sampling import RowSampler, sample
from server.engine.scheduler import Plan, Scheduler, SchedulerConfig, Ticket
from server.errors import InvalidRequest

log = logging.getLogger(__name__)

# Continuation tokens the scoring rows of one step feed, all together: each returns a row of
# logits [V], so this bounds a step's logits to SCORE_TOKENS_PER_STEP x V floats.
SCORE_TOKENS_PER_STEP = 512


class Runner(Protocol):
    """What the core needs from a model kind that generates (causal.py, seq2seq.py)."""

    @property
    def chunked_prefill(self) -> bool:
        """Whether a prompt may be prefilled over several steps."""

    @property
    def prompt_is_context(self) -> bool:
        """Whether generated text continues the input (not on an encoder-decoder)."""

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of keys and values one position of a row takes."""

    def new_cache(self, capacity: int) -> Any:
        """Empty key/value storage for `capacity` positions."""

    def forward(self, cache: Any, works: Seq[Work]) -> torch.Tensor:
        """Run one step's works; the next-token logits [R, V] (float32) they ask for, in order."""

    def release(self, cache: Any, seq_ids: Seq[int]) -> None:
        """Rows that left: forget what the cache holds for them."""


Check = Callable[[Request], RowPrompt]


@dataclass
class Sequence:
    """One request inside the engine, from admission to its last event."""

    id: int
    request: Request
    prompt: RowPrompt
    own_ids: list[int]  # the row's own tokens to prefill (its input, with pads where inline prompts go)
    sampler: RowSampler
    text: TextStream | None
    segment: int = 0
    cached: int = 0  # own tokens (input, then generated) whose keys and values are stored
    token_ids: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # a scoring request's log-probabilities so far
    next_branch: int = 0  # the first continuation whose later tokens are not scored yet
    cancelled: bool = False
    matcher: llguidance.LLMatcher | None = None  # the row's grammar, advanced with each token
    label: str = ""  # the task's label on the latency metrics
    arrived: float = 0.0  # time.perf_counter() when the engine got the request
    last_token_at: float = 0.0  # ... when its latest token was sampled (0: none yet)
    timing: Timing = field(default_factory=lambda: Timing(time.time_ns()))  # the same moments, for traces

    @property
    def state(self) -> RowState:
        return RowState(self.request.params, self.token_ids, self.matcher)

    @property
    def usage(self) -> Usage:
        return Usage(len(self.request.input_ids), self.prompt.num_virtual_tokens, len(self.token_ids))

    @property
    def prefilled(self) -> bool:
        return self.cached >= len(self.own_ids)

    @property
    def scoring(self) -> bool:
        return bool(self.request.continuations)

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
        elif self._completes_grammar(token_id):
            reason = "stop"
        elif len(self.token_ids) >= params.max_new_tokens:
            reason = "length"
        if reason and self.text:
            text += self.text.finish()
        return text, reason

    def _completes_grammar(self, token_id: int) -> bool:
        """Advance the row's grammar by the token; True once it allows nothing more."""
        if self.matcher is None:
            return False
        self.matcher.consume_token(token_id)
        return bool(self.matcher.is_stopped())

    def score_work(self, budget: int) -> Work | None:
        """The next continuations to score within `budget` tokens (at least one, if the budget is whole):
        each one's tokens but its last, back to back. None if the next one does not fit."""
        branches: list[int] = []
        token_ids: list[int] = []
        for tokens in self.request.continuations[self.next_branch :]:
            fed = tokens[:-1]
            if len(token_ids) + len(fed) > budget and (branches or budget < SCORE_TOKENS_PER_STEP):
                break
            if fed:
                branches.append(len(fed))
                token_ids.extend(fed)
        if not branches:
            return None
        return Work(self.id, token_ids, self.cached, self.prompt, self.segment,
                    tuple(range(len(token_ids))), tuple(branches))  # fmt: skip


def reserved_tokens(own_tokens: int, request: Request) -> int:
    """KV slots a row may fill: its own tokens, and the tokens it may generate (scored ones are not kept)."""
    return own_tokens + (0 if request.continuations else request.params.max_new_tokens)


def kv_capacity(config: SchedulerConfig, bytes_per_token: int) -> int:
    """Slots the KV pool has: what its byte budget holds, capped by `max_batch_tokens`."""
    capacity = max(1, config.kv_cache_bytes // bytes_per_token)
    return min(capacity, config.max_batch_tokens) if config.max_batch_tokens else capacity


class EngineCore:
    def __init__(
        self,
        runner: Runner,
        check: Check,
        config: SchedulerConfig,
        tokenizer: Tokenizer | None = None,
        eos_token_ids: frozenset[int] = frozenset(),
        metrics: EngineMetrics | None = None,
        grammars: Grammars | None = None,
    ) -> None:
        self.runner = runner
        self.check = check
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.grammars = grammars
        capacity = kv_capacity(config, runner.kv_bytes_per_token)
        self.cache = runner.new_cache(capacity)
        self.scheduler = Scheduler(config, capacity, runner.chunked_prefill)
        self.metrics = metrics or EngineMetrics()
        self.metrics.kv_capacity_bytes.set(capacity * runner.kv_bytes_per_token)
        self.sequences: dict[int, Sequence] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    @property
    def has_work(self) -> bool:
        return bool(self.sequences)

    @property
    def running(self) -> list[Sequence]:
        """Rows holding KV slots, in admission order."""
        return [self.sequences[i] for i in self.scheduler.running if i in self.sequences]

    def add(self, request: Request) -> int:
        """Check and queue a request; raises a typed error (bad request, too long, queue full)."""
        prompt = self.check(request)
        own_ids = prompt.own_token_ids(request.input_ids)
        text = None
        if self.tokenizer is not None and not request.continuations:
            context = request.input_ids if self.runner.prompt_is_context else ()
            text = TextStream(self.tokenizer, context, request.params.stop)
        matcher = None
        if request.params.constraint is not None:
            if self.grammars is None:
                raise InvalidRequest("this model has no tokenizer, so its text cannot be constrained")
            matcher = self.grammars.matcher(request.params.constraint)
        with self._lock:
            sampler = RowSampler(request.params)
            sequence = Sequence(next(self._ids), request, prompt, own_ids, sampler, text, matcher=matcher,
                                label=self.metrics.tasks.label(request.task), arrived=time.perf_counter())  # fmt: skip
            ticket = Ticket(sequence.id, len(own_ids), reserved_tokens(len(own_ids), request), request.client)
            self.scheduler.add(ticket)
            self.sequences[sequence.id] = sequence
        self.metrics.queue_depth.set(self.scheduler.num_waiting)
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
        plan = self.scheduler.schedule()
        admitted_at = time.perf_counter()
        for running in plan.admitted:
            sequence = self.sequences[running.ticket.id]
            sequence.segment = running.segment
            self._observe_admission(sequence, admitted_at)
        self.metrics.queue_depth.set(self.scheduler.num_waiting)
        works = self._works(plan)
        if works:
            start = time.perf_counter()
            logits, failed = self._forward(works)
            seconds = time.perf_counter() - start
            histogram = self.metrics.prefill_seconds if plan.chunks else self.metrics.decode_seconds
            histogram.observe(seconds)
            for work in failed:
                events.append(self._finish(self.sequences[work.seq_id], "error"))
            failed_ids = {work.seq_id for work in failed}
            events += self._advance([work for work in works if work.seq_id not in failed_ids], logits)
        self._observe()
        return events

    def abort(self, reason: str = "error") -> list[Event]:
        """End every request now (the engine failed); the engine stays usable."""
        events = []
        for sequence in list(self.sequences.values()):
            self.scheduler.withdraw(sequence.id)
            events.append(self._finish(sequence, reason))
        return events

    def kv_bytes(self) -> tuple[int, int]:
        """(bytes of the running rows' own keys and values, bytes of the distinct task prefixes they read)."""
        running = self.running
        rows = sum(sequence.cached for sequence in running) * self.runner.kv_bytes_per_token
        prefixes = {id(s.prompt.prefix): s.prompt.prefix.nbytes for s in running if s.prompt.prefix is not None}
        return rows, sum(prefixes.values())

    def _works(self, plan: Plan) -> list[Work]:
        works = []
        score_budget = SCORE_TOKENS_PER_STEP
        for sequence in self.running:
            chunk = plan.chunks.get(sequence.id)
            if chunk is not None:
                start, count = chunk
                last = start + count == len(sequence.own_ids)
                works.append(Work(sequence.id, sequence.own_ids[start : start + count], start, sequence.prompt,
                                  sequence.segment, (count - 1,) if last else ()))  # fmt: skip
            elif sequence.scoring and sequence.prefilled:
                work = sequence.score_work(score_budget)
                if work is not None:
                    works.append(work)
                    score_budget -= work.num_tokens
            elif sequence.prefilled:
                works.append(Work(sequence.id, sequence.token_ids[-1:], sequence.cached, sequence.prompt,
                                  sequence.segment, (0,)))  # fmt: skip
        return works

    def _forward(self, works: list[Work]) -> tuple[torch.Tensor, list[Work]]:
        """Logits for `works`, leaving out the works that make the forward fail (returned second)."""
        try:
            return self.runner.forward(self.cache, works), []
        except Exception:
            if len(works) == 1:
                log.exception("a row failed the model step; ending it")
                return torch.empty(0), works
        half = len(works) // 2
        first, failed_first = self._forward(works[:half])
        second, failed_second = self._forward(works[half:])
        kept = [logits for logits in (first, second) if len(logits)]  # a failed half has none, on no device
        return (torch.cat(kept) if kept else first), failed_first + failed_second

    def _advance(self, works: list[Work], logits: torch.Tensor) -> list[Event]:
        """Apply a step's results: store progress, score, sample, emit, finish."""
        events: list[Event] = []
        row = 0
        sampling: list[tuple[Sequence, torch.Tensor]] = []
        for work in works:
            sequence = self.sequences[work.seq_id]
            rows = logits[row : row + len(work.logits_at)]  # [r, V]
            row += len(work.logits_at)
            if work.branches:
                done = self._score(sequence, work, rows)
                if done:
                    events.append(self._finish(sequence, "scored"))
                continue
            if work.start < len(sequence.own_ids):
                self.metrics.prefill_tokens.inc(work.num_tokens)
            sequence.cached = work.start + work.num_tokens
            if not work.logits_at:
                continue  # a prompt chunk that is not the last
            if sequence.scoring:
                self._first_scores(sequence, rows[0])
                if all(len(c) == 1 for c in sequence.request.continuations):
                    events.append(self._finish(sequence, "scored"))
                continue
            sampling.append((sequence, rows[0]))
        if sampling:
            events += self._sample(sampling)
        return events

    def _sample(self, rows: list[tuple[Sequence, torch.Tensor]]) -> list[Event]:
        events: list[Event] = []
        drawn = self._sample_tokens(rows)
        now = time.perf_counter()
        for (sequence, _), result in zip(rows, drawn, strict=True):
            if result is None:
                events.append(self._finish(sequence, "error"))
                continue
            self._observe_token(sequence, now)
            token, logprob = result
            text, reason = sequence.append(token, self.eos_token_ids)
            events.append(Event(sequence.id, token, text, logprob=logprob))
            if reason is not None:
                events.append(self._finish(sequence, reason))
        self.metrics.generated_tokens.inc(sum(result is not None for result in drawn))
        return events

    def _sample_tokens(self, rows: list[tuple[Sequence, torch.Tensor]]) -> list[tuple[int, TokenLogprob | None] | None]:
        """One token per row (and its log-probability, if the row reports them), sampled together: the
        logits adjusted (biases, penalties, grammars), then drawn. A row whose sampling fails gets None."""
        try:
            stacked = torch.stack([logits for _, logits in rows])  # [B, V]
            states = [sequence.state for sequence, _ in rows]
            log_probs = adjust(stacked, states)
            tokens = sample(stacked, [sequence.sampler for sequence, _ in rows]).tolist()
            return list(zip(tokens, token_logprobs(log_probs, states, tokens), strict=True))
        except Exception:
            if len(rows) == 1:
                log.exception("sampling failed for a row; ending it")
                return [None]
        half = len(rows) // 2
        return self._sample_tokens(rows[:half]) + self._sample_tokens(rows[half:])

    def _first_scores(self, sequence: Sequence, logits: torch.Tensor) -> None:
        """Each continuation's first token, read off the prompt's last logits [V]."""
        log_probs = torch.log_softmax(logits, dim=-1)
        sequence.scores = [float(log_probs[c[0]]) for c in sequence.request.continuations]

    def _score(self, sequence: Sequence, work: Work, logits: torch.Tensor) -> bool:
        """Add the log-probabilities of the continuations `work` fed; True once every one is scored."""
        log_probs = torch.log_softmax(logits, dim=-1)  # [n, V]
        continuations = sequence.request.continuations
        row = 0
        for length in work.branches:
            while len(continuations[sequence.next_branch]) == 1:
                sequence.next_branch += 1
            tokens = continuations[sequence.next_branch]
            targets = torch.tensor(tokens[1:], device=log_probs.device)
            picked = log_probs[row : row + length].gather(-1, targets[:, None])
            sequence.scores[sequence.next_branch] += float(picked.sum())
            sequence.next_branch += 1
            row += length
        while sequence.next_branch < len(continuations) and len(continuations[sequence.next_branch]) == 1:
            sequence.next_branch += 1
        return sequence.next_branch >= len(continuations)

    def _drop_cancelled(self, events: list[Event]) -> None:
        with self._lock:
            cancelled = [s for s in self.sequences.values() if s.cancelled]
        for sequence in cancelled:
            self.scheduler.withdraw(sequence.id)
            events.append(self._finish(sequence, "cancelled"))

    def _finish(self, sequence: Sequence, reason: str) -> Event:
        self.scheduler.finish(sequence.id)
        self.runner.release(self.cache, [sequence.id])
        with self._lock:
            self.sequences.pop(sequence.id, None)
        self.metrics.finished.labels(reason).inc()
        self.metrics.request_latency.labels(sequence.label).observe(time.perf_counter() - sequence.arrived)
        if sequence.request.on_done is not None:
            sequence.request.on_done()
        timing = replace(sequence.timing, finished_ns=time.time_ns())
        return Event(sequence.id, finish_reason=reason, usage=sequence.usage, scores=tuple(sequence.scores),
                     timing=timing)  # fmt: skip

    def _observe_admission(self, sequence: Sequence, now: float) -> None:
        sequence.timing = replace(sequence.timing, admitted_ns=time.time_ns())
        self.metrics.queue_wait.labels(sequence.label).observe(now - sequence.arrived)
        self.metrics.prompt_tokens.inc(len(sequence.request.input_ids))
        self.metrics.virtual_tokens.inc(sequence.prompt.num_virtual_tokens)

    def _observe_token(self, sequence: Sequence, now: float) -> None:
        if sequence.last_token_at:
            self.metrics.time_per_output_token.labels(sequence.label).observe(now - sequence.last_token_at)
        else:
            self.metrics.time_to_first_token.labels(sequence.label).observe(now - sequence.arrived)
            sequence.timing = replace(sequence.timing, first_token_ns=time.time_ns())
        sequence.last_token_at = now

    def _observe(self) -> None:
        rows, prefixes = self.kv_bytes()
        self.metrics.kv_row_bytes.set(rows)
        self.metrics.kv_prefix_bytes.set(prefixes)
        self.metrics.batch_size.set(len(self.scheduler.running))
