"""What every route shares: the app state, task resolution, templating, tokenization, defaults."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Request as HttpRequest
from prometheus_client import CollectorRegistry

from prompt_store.errors import UnknownTask
from prompt_store.methods import METHODS
from prompt_store.records import INPUT_PLACEHOLDER, PROMPT_PLACEHOLDER, TaskCard, VersionRecord
from prompt_store.spec import ModelSpec
from prompt_store.store import PromptStore
from server.api.observability import HttpMetrics
from server.api.schemas import Parameters
from server.config import ServerConfig
from server.engine.async_engine import AsyncEngine, RequestStream
from server.engine.constraints import Constraint
from server.engine.engine import Engine, Request
from server.engine.logits import TokenLogprob
from server.engine.sampling import SamplingParams
from server.errors import ContextTooLong, InvalidRequest, RequestTooLarge
from server.logs import note
from server.prompts.registry import Lease, PromptRegistry


@dataclass(frozen=True)
class Encoded:
    """One input row, tokenized."""

    input_ids: list[int]
    prompt_at: int | None = None  # the card's template puts the virtual tokens after this many tokens


@dataclass
class ServerState:
    """Everything the routes use, built once by `create_app` and kept on `app.state.server`."""

    config: ServerConfig
    model_name: str
    engine: Engine
    async_engine: AsyncEngine  # runs `engine` step by step in its own thread, continuously batched
    store: PromptStore
    registry: PromptRegistry
    metrics: CollectorRegistry
    http: HttpMetrics

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @contextlib.asynccontextmanager
    async def lease(self, task: str | None, version: int | None) -> AsyncIterator[Lease | None]:
        """The task version a request runs with, pinned on the device until the block ends."""
        lease = await self.acquire(task, version)
        try:
            yield lease
        finally:
            self.release(lease)

    @contextlib.asynccontextmanager
    async def lease_for_rows(self, task: str | None, version: int | None) -> AsyncIterator[Lease | None]:
        """A lease handed on to the rows `submit` queues (the last of them to leave releases it); released
        here only if the block fails before they are queued."""
        lease = await self.acquire(task, version)
        try:
            yield lease
        except BaseException:
            self.release(lease)
            raise

    @functools.cached_property
    def max_input_chars(self) -> int:
        """The longest text that can fit the context: no token covers more characters than the longest
        in the vocabulary, so a longer text is more tokens than the model has positions."""
        longest = max(map(len, self.tokenizer.get_vocab()), default=1)
        return self.engine.base.spec.max_positions * max(longest, 1)

    def check_length(self, num_chars: int, what: str) -> None:
        """Refuse a text that cannot fit the context by its length alone, before tokenizing it."""
        if num_chars > self.max_input_chars:
            raise ContextTooLong(
                f"{what} is {num_chars} characters; this model takes at most "
                f"{self.engine.base.spec.max_positions} tokens, which is at most {self.max_input_chars} characters"
            )

    async def encode_rows(self, texts: Sequence[str], card: TaskCard | None) -> list[Encoded]:
        """Each input templated and tokenized, in a worker thread: a large body never stalls the event loop.
        Inputs too long to fit are refused first, by their templated length, without being built."""
        template = template_of(card)
        for index, text in enumerate(texts):
            self.check_length(templated_length(template, text), f"inputs[{index}] with the task's template")
        return await asyncio.to_thread(lambda: [self.encode(text, card) for text in texts])

    async def tokenize_labels(self, verbalizers: Sequence[str]) -> list[list[int]]:
        """Each verbalizer's tokens without special tokens, in a worker thread."""
        for index, text in enumerate(verbalizers):
            self.check_length(len(text), f"labels[{index}]")
        return await asyncio.to_thread(
            lambda: [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in verbalizers]
        )

    def encode(self, text: str, card: TaskCard | None) -> Encoded:
        """Template and tokenize as `tokenizer(text)` does (blocking: `encode_rows` runs it in a thread).
        Only `{input}` and `{prompt}` are interpreted: the text before `{prompt}` is tokenized as a whole
        input, the text after it continues without special tokens, and the task's virtual tokens go between."""
        before, placeholder, after = template_of(card).partition(PROMPT_PLACEHOLDER)
        head: list[int] = self.tokenizer(before.replace(INPUT_PLACEHOLDER, text))["input_ids"]
        if not placeholder:
            return Encoded(head)
        tail: list[int] = self.tokenizer(after.replace(INPUT_PLACEHOLDER, text), add_special_tokens=False)["input_ids"]
        return Encoded(head + tail, prompt_at=len(head))

    def check_classify_work(self, num_rows: int, continuations: Sequence[Sequence[int]]) -> None:
        """Scoring runs every row against every label's verbalizer: bound that product before it runs."""
        longest = max((len(tokens) for tokens in continuations), default=0)
        work = num_rows * len(continuations) * longest
        limit = self.config.max_classify_tokens
        if work > limit:
            raise RequestTooLarge(
                f"classify: {num_rows} inputs × {len(continuations)} labels × {longest} verbalizer tokens "
                f"= {work} tokens to score; this server scores at most {limit} per request: send fewer "
                "inputs or labels per request"
            )

    def rows(self, inputs: str | list[str]) -> list[str]:
        rows = [inputs] if isinstance(inputs, str) else inputs
        if not rows:
            raise InvalidRequest("inputs: expected a string or a non-empty list of strings")
        if len(rows) > self.config.max_inputs:
            raise InvalidRequest(f"inputs: at most {self.config.max_inputs} per request, found {len(rows)}")
        return rows

    async def acquire(self, task: str | None, version: int | None) -> Lease | None:
        if task is None:
            if version is not None:
                raise InvalidRequest("version: a version needs a task")
            self.http.count_task(None)
            return None
        try:
            lease = await self.registry.acquire(task, version)
        except UnknownTask:
            raise UnknownTask(await self.unknown_task_message(task)) from None
        self.http.count_task(task)  # only now: a name the registry knows, never one a client made up
        return lease

    async def unknown_task_message(self, task: str) -> str:
        """Says the task does not exist, names the closest existing ones, and where to find them all."""
        known = await self.store.list_tasks()
        close = difflib.get_close_matches(task, known, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        return (
            f"task {task!r} does not exist{hint}; GET /v1/prompts lists the tasks this server has "
            "(GET /v1/models lists them for the OpenAI routes, with the base model's id)"
        )

    def release(self, lease: Lease | None) -> None:
        if lease is not None:
            self.registry.release(lease)

    def submit(
        self,
        lease: Lease | None,
        inputs: Sequence[Encoded],
        task_index: int,
        params: SamplingParams,
        client: str,
        continuations: tuple[tuple[int, ...], ...] = (),
    ) -> list[RequestStream]:
        """Queue one engine request per input (scoring `continuations` instead of generating, if given);
        `client` is who sent them, for the engine's fair share between clients.
        The lease is released when the last of them leaves the engine, whatever happens to the HTTP
        connection; if one is refused, the ones already queued are withdrawn (and release the lease as
        they leave)."""
        prompt = lease.prompt if lease else None
        remaining = len(inputs)
        lock = threading.Lock()

        def row_done() -> None:  # called from the engine thread
            nonlocal remaining
            with lock:
                remaining -= 1
                last = remaining == 0
            if last:
                self.release(lease)

        streams: list[RequestStream] = []
        try:
            for row in inputs:
                task = lease.record.task if lease else None
                request = Request(
                    row.input_ids, prompt, task_index, params, row_done, row.prompt_at, client, continuations, task
                )
                streams.append(self.async_engine.submit(request))
        except BaseException:
            with lock:
                remaining -= len(inputs) - len(streams)  # rows never queued will not call back
                last = remaining == 0
            if last:
                self.release(lease)
            for stream in streams:
                stream.cancel()
            raise
        return streams


def state_of(request: HttpRequest) -> ServerState:
    """The state `create_app` put on the app."""
    state: ServerState = request.app.state.server
    return state


@dataclass(frozen=True)
class Generating:
    """The rows of one request, queued: the version they run with and one event stream per row."""

    lease: Lease | None
    streams: list[RequestStream]
    prompt_lengths: list[int]  # tokens of each row's input

    @property
    def version(self) -> int | None:
        return self.lease.record.version if self.lease else None


async def start_generation(
    state: ServerState,
    task: str | None,
    rows: Sequence[str] | Sequence[list[int]],
    parameters: Parameters,
    client: str,
    *,
    version: int | None = None,
    task_index: int = 0,
    base: SamplingParams | None = None,
) -> Generating:
    """The one way a generation starts, on every route: resolve the task, check the parameters (`base`:
    the route's defaults; given, they replace the task card's), template and tokenize text rows (token
    rows go as they are) and queue them. Any error surfaces here, before a response starts."""
    async with state.lease_for_rows(task, version) as lease:
        card = lease.record.card if lease else None
        params = sampling_params(parameters, card if base is None else None, base)
        texts = [row for row in rows if isinstance(row, str)]
        token_rows = [Encoded(list(row)) for row in rows if not isinstance(row, str)]
        inputs = await state.encode_rows(texts, card) if texts else token_rows
        record = lease.record if lease else None
        note(task=task, version=record and record.version, peft_type=record and record.peft_type, rows=len(inputs),
             tokens_in=sum(len(row.input_ids) for row in inputs),
             inputs=list(rows) if state.config.log_content else None)  # fmt: skip
        streams = state.submit(lease, inputs, task_index, params, client)
    return Generating(lease, streams, [len(row.input_ids) for row in inputs])


def template_of(card: TaskCard | None) -> str:
    return card.template if card is not None and card.template is not None else INPUT_PLACEHOLDER


def templated_length(template: str, text: str) -> int:
    """Characters of `template` with `text` put in for every {input} (and {prompt} taken out), unbuilt."""
    copies = template.count(INPUT_PLACEHOLDER)
    placeholders = copies * len(INPUT_PLACEHOLDER) + template.count(PROMPT_PLACEHOLDER) * len(PROMPT_PLACEHOLDER)
    return len(template) - placeholders + copies * len(text)


def sampling_params(
    parameters: Parameters, card: TaskCard | None, base: SamplingParams | None = None
) -> SamplingParams:
    """Request values first, then the task card's defaults, then promptswap's (greedy, 64 tokens)."""
    params = base or SamplingParams()
    defaults = card.defaults if card is not None and card.defaults is not None else None
    for source in (defaults, parameters):
        if source is None:
            continue
        params = replace(params, **engine_values({k: v for k, v in source.model_dump().items() if v is not None}))
    params.check()
    return params


def engine_values(values: dict[str, Any]) -> dict[str, Any]:
    """Request parameters as the engine's `SamplingParams` fields: the stop strings, log-probabilities,
    logit biases and the one constraint in the engine's forms."""
    if "stop" in values:
        values["stop"] = tuple(values["stop"])
    wanted, top = values.pop("logprobs", None), values.pop("top_logprobs", None)
    if wanted:
        values["logprobs"] = top or 0
    if "logit_bias" in values:
        values["logit_bias"] = tuple((int(token), bias) for token, bias in values["logit_bias"].items())
    for kind in ("json_schema", "regex", "choice"):
        if kind in values:
            values["constraint"] = getattr(Constraint, kind)(values.pop(kind))
    return values


def logprob_json(entry: TokenLogprob, tokenizer: Any) -> dict[str, Any]:
    """One generated token's log-probability entry, with its step's most likely tokens (API.md 1.1)."""

    def token(token_id: int, logprob: float) -> dict[str, Any]:
        return {"token_id": token_id, "token": tokenizer.decode([token_id]), "logprob": logprob}

    top = [token(token_id, logprob) for token_id, logprob in entry.top]
    return {**token(entry.token_id, entry.logprob), "top_logprobs": top}


def labelled(names: list[str], probabilities: list[float]) -> dict[str, Any]:
    """One classify result: the most probable label, and every label's probability."""
    best = max(range(len(names)), key=probabilities.__getitem__)
    return {"label": names[best], "scores": dict(zip(names, probabilities, strict=True))}


def usage_json(usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "virtual_tokens": usage.virtual_tokens,
        "completion_tokens": usage.completion_tokens,
    }


def record_json(record: VersionRecord, spec: ModelSpec) -> dict[str, Any]:
    """A task version as the prompt routes show it, with how the served model runs it."""
    places_prompt = record.card is not None and record.card.places_prompt
    return {
        "task": record.task,
        "version": record.version,
        "peft_type": record.peft_type,
        "num_virtual_tokens": record.num_virtual_tokens,
        "num_tasks": record.num_tasks,
        "sha256": record.sha256,
        "created_at": record.created_at,
        "nbytes": record.nbytes,
        "card": record.card.model_dump(exclude_none=True) if record.card else None,
        "family": spec.model_type,
        "model_kind": spec.kind,
        "runtime_form": METHODS[record.peft_type].runtime_form(spec.kind, places_prompt),
    }
