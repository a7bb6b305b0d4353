"""OpenAI-compatible routes, so the official `openai` client works unchanged.

`model` names a task, or the base model (its id in GET /v1/models) for no prompt. OpenAI's
defaults apply here (temperature 1, top_p 1, 16 tokens for completions).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from prompt_store.errors import UserError
from server.api.client_limit import client_of
from server.api.responses import EVERY_ROUTE, INFERENCE, ChatAnswer, CompletionAnswer, ModelList, answers
from server.api.schemas import ChatBody, CompletionBody, OpenAIBody, Parameters
from server.api.service import Generating, ServerState, start_generation, state_of
from server.api.streaming import DONE, collect, merged, sse, sse_error
from server.engine.async_engine import RequestStream
from server.engine.logits import TokenLogprob
from server.engine.request import Generation
from server.engine.sampling import SamplingParams
from server.errors import InvalidRequest

router = APIRouter()

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}
CHAT_DEFAULT_MAX_TOKENS = 256
OPENAI_DEFAULTS = SamplingParams(temperature=1.0)  # in place of the task card's defaults


def task_of(state: ServerState, model: str) -> str | None:
    return None if model == state.model_name else model


def stop_list(stop: str | list[str] | None) -> list[str] | None:
    return [stop] if isinstance(stop, str) else stop


async def start(request: Request, model: str, rows: list[str] | list[list[int]], parameters: Parameters) -> Generating:
    """Resolve `model` (a task, or the base model), then start as /v1/generate does, with OpenAI's defaults."""
    state = state_of(request)
    return await start_generation(
        state, task_of(state, model), rows, parameters, client_of(request), base=OPENAI_DEFAULTS
    )


def usage(results: list[Generation], prompt_lengths: list[int]) -> dict[str, int]:
    prompt, completion = sum(prompt_lengths), sum(len(r.token_ids) for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@router.post("/v1/completions", response_model=None, responses=answers(CompletionAnswer, INFERENCE, streams=True))
async def completions(body: CompletionBody, request: Request) -> dict[str, Any] | StreamingResponse:
    state = state_of(request)
    texts = state.rows(body.prompt)
    parameters = route_parameters(
        max_new_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
        seed=body.seed, stop=stop_list(body.stop), logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or None, **adjustments(body),
    )  # fmt: skip
    started = await start(request, body.model, texts, parameters)
    streams, prompt_lengths = started.streams, started.prompt_lengths
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": body.model}  # fmt: skip
    if body.stream:
        usage_at_end = prompt_lengths if body.stream_options and body.stream_options.include_usage else None
        chunks = completion_chunks(head, streams, usage_at_end, state.tokenizer)
        return StreamingResponse(chunks, media_type="text/event-stream")
    results = await collect(streams)
    tokenizer = state.tokenizer
    choices = [
        {"index": i, "text": r.text, "finish_reason": FINISH_REASONS.get(r.finish_reason, "stop"),
         "logprobs": completion_logprobs(r.logprobs, tokenizer) if body.logprobs is not None else None}
        for i, r in enumerate(results)
    ]  # fmt: skip
    return {**head, "choices": choices, "usage": usage(results, prompt_lengths)}


def route_parameters(**values: Any) -> Parameters:
    """Native parameters from an OpenAI body's fields: what does not fit them is the client's error (400)."""
    try:
        return Parameters(**values)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise InvalidRequest(f"{where}: {problem['msg']}" if where else problem["msg"]) from None


def adjustments(body: OpenAIBody) -> dict[str, Any]:
    """The penalties and biases of an OpenAI body, as native parameters."""
    return {"presence_penalty": body.presence_penalty, "frequency_penalty": body.frequency_penalty,
            "logit_bias": body.logit_bias}  # fmt: skip


def completion_logprobs(entries: list[TokenLogprob], tokenizer: Any) -> dict[str, Any]:
    """The completions API's shape: parallel lists of tokens, their log-probabilities, each step's most
    likely tokens as {token: log-probability}, and where each token's text starts."""
    tokens = [tokenizer.decode([entry.token_id]) for entry in entries]
    offsets = [sum(len(token) for token in tokens[:i]) for i in range(len(tokens))]
    top = [{tokenizer.decode([token_id]): logprob for token_id, logprob in entry.top} for entry in entries]
    return {"tokens": tokens, "token_logprobs": [entry.logprob for entry in entries], "top_logprobs": top,
            "text_offset": offsets}  # fmt: skip


def chat_logprobs(entries: list[TokenLogprob], tokenizer: Any) -> dict[str, Any]:
    """The chat API's shape: per token its text, log-probability, UTF-8 bytes and most likely tokens."""

    def token(token_id: int, logprob: float) -> dict[str, Any]:
        text = tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [{**token(entry.token_id, entry.logprob),
                         "top_logprobs": [token(token_id, logprob) for token_id, logprob in entry.top]}
                        for entry in entries]}  # fmt: skip


async def completion_chunks(
    head: dict[str, Any], streams: list[RequestStream], usage_at_end: list[int] | None, tokenizer: Any
) -> AsyncIterator[str]:
    """`usage_at_end`: the prompt lengths, when the client asked for a last chunk with the usage."""
    results = [Generation() for _ in streams]
    try:
        async for index, event in merged(streams):
            results[index].add(event)
            finish = FINISH_REASONS.get(event.finish_reason or "", "stop") if event.finish_reason else None
            logprobs = completion_logprobs([event.logprob], tokenizer) if event.logprob is not None else None
            if event.text or finish or logprobs:
                choice = {"index": index, "text": event.text, "logprobs": logprobs, "finish_reason": finish}
                yield sse({**head, "choices": [choice]})
    except UserError as error:
        yield sse_error(error)
    else:
        if usage_at_end is not None:
            yield sse({**head, "choices": [], "usage": usage(results, usage_at_end)})
    yield DONE


@router.post("/v1/chat/completions", response_model=None, responses=answers(ChatAnswer, INFERENCE, streams=True))
async def chat_completions(body: ChatBody, request: Request) -> dict[str, Any] | StreamingResponse:
    state = state_of(request)
    if getattr(state.tokenizer, "chat_template", None) is None:
        raise InvalidRequest("this model's tokenizer has no chat template; use /v1/completions")
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    state.check_length(sum(len(m["content"]) for m in messages), "the messages' content")
    input_ids = await asyncio.to_thread(chat_input_ids, state.tokenizer, messages)
    schema = body.response_format.output_schema() if body.response_format is not None else None
    parameters = route_parameters(
        max_new_tokens=body.max_completion_tokens or body.max_tokens or CHAT_DEFAULT_MAX_TOKENS,
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop_list(body.stop),
        logprobs=body.logprobs, top_logprobs=body.top_logprobs, json_schema=schema, **adjustments(body),
    )  # fmt: skip
    started = await start(request, body.model, [input_ids], parameters)
    streams, prompt_lengths = started.streams, started.prompt_lengths
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
    if body.stream:
        usage_at_end = prompt_lengths if body.stream_options and body.stream_options.include_usage else None
        chunks = chat_chunks(head, streams, usage_at_end, state.tokenizer)
        return StreamingResponse(chunks, media_type="text/event-stream")
    results = await collect(streams)
    message = {"role": "assistant", "content": results[0].text}
    choice = {"index": 0, "message": message, "finish_reason": FINISH_REASONS.get(results[0].finish_reason, "stop"),
              "logprobs": chat_logprobs(results[0].logprobs, state.tokenizer) if body.logprobs else None}  # fmt: skip
    return {**head, "object": "chat.completion", "choices": [choice], "usage": usage(results, prompt_lengths)}


def chat_input_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The chat template applied and tokenized (blocking: run in a worker thread)."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


async def chat_chunks(
    head: dict[str, Any], streams: list[RequestStream], usage_at_end: list[int] | None, tokenizer: Any
) -> AsyncIterator[str]:
    """`usage_at_end`: the prompt lengths, when the client asked for a last chunk with the usage."""
    chunk = {**head, "object": "chat.completion.chunk"}
    yield sse(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    )
    results = [Generation() for _ in streams]
    try:
        async for index, event in merged(streams):
            results[index].add(event)
            if event.text or event.logprob is not None:
                delta: dict[str, Any] = {"index": 0, "delta": {"content": event.text}, "finish_reason": None}
                if event.logprob is not None:
                    delta["logprobs"] = chat_logprobs([event.logprob], tokenizer)
                yield sse({**chunk, "choices": [delta]})
            if event.finish_reason:
                finish = FINISH_REASONS.get(event.finish_reason, "stop")
                yield sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    except UserError as error:
        yield sse_error(error)
    else:
        if usage_at_end is not None:
            yield sse({**chunk, "choices": [], "usage": usage(results, usage_at_end)})
    yield DONE


@router.get("/v1/models", response_model=None, responses=answers(ModelList, (401, 403, *EVERY_ROUTE)))
async def models(request: Request) -> dict[str, Any]:
    state = state_of(request)
    created = int(time.time())
    tasks = await state.store.list_tasks()
    entries = [{"id": state.model_name, "object": "model", "created": created, "owned_by": "promptswap"}]
    entries += [{"id": task, "object": "model", "created": created, "owned_by": "promptswap"} for task in tasks]
    return {"object": "list", "data": entries}
