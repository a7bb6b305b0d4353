"""POST /v1/generate and POST /v1/classify."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from prompt_store.errors import UserError
from server.api.client_limit import client_of
from server.api.encoder_classify import classify_with_heads
from server.api.schemas import ClassifyBody, GenerateBody
from server.api.service import ServerState, sampling_params, usage_json
from server.api.streaming import DONE, merged, sse, sse_error
from server.engine.async_engine import RequestStream
from server.engine.request import Generation
from server.engine.sampling import SamplingParams
from server.errors import InvalidRequest
from server.prompts.registry import Lease

router = APIRouter()


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


@router.post("/v1/generate", response_model=None)
async def generate(body: GenerateBody, request: Request) -> dict[str, Any] | StreamingResponse:
    state = state_of(request)
    lease, streams = await start_generation(state, body, client_of(request))
    version = lease.record.version if lease else None
    if body.stream:
        return StreamingResponse(stream_events(streams), media_type="text/event-stream")
    results = [Generation() for _ in streams]
    async for index, event in merged(streams):
        results[index].add(event)
    outputs = [
        {"text": r.text, "token_ids": r.token_ids, "finish_reason": r.finish_reason, "usage": usage_json(r.usage)}
        for r in results
    ]
    return {"task": body.task, "version": version, "outputs": outputs}


async def start_generation(
    state: ServerState, body: GenerateBody, client: str
) -> tuple[Lease | None, list[RequestStream]]:
    """Resolve, check and queue every row; any error surfaces here, before a response starts."""
    texts = state.rows(body.inputs)
    lease = await state.acquire(body.task, body.version)
    try:
        card = lease.record.card if lease else None
        params = sampling_params(body.parameters, card)
        inputs = await state.encode_rows(texts, card)
    except BaseException:
        state.release(lease)
        raise
    return lease, state.submit(lease, inputs, body.task_index, params, client)


async def stream_events(streams: list[RequestStream]) -> AsyncIterator[str]:
    try:
        async for index, event in merged(streams):
            if event.token_id is not None:
                yield sse({"index": index, "text": event.text, "token_id": event.token_id})
            if event.finish_reason is not None and event.usage is not None:
                yield sse({"index": index, "finish_reason": event.finish_reason, "usage": usage_json(event.usage)})
    except UserError as error:  # the engine failed mid-stream
        yield sse_error(error)
    yield DONE


@router.post("/v1/classify")
async def classify(body: ClassifyBody, request: Request) -> dict[str, Any]:
    state = state_of(request)
    if state.engine.kind.classifier is not None:
        return await classify_with_heads(state, body)
    texts = state.rows(body.inputs)
    lease = await state.acquire(body.task, body.version)
    try:
        card = lease.record.card if lease else None
        labels = body.labels if body.labels is not None else (card.labels if card else None)
        if not labels:
            raise InvalidRequest("labels: the task card has none; pass `labels` (a list, or {label: verbalizer})")
        if len(labels) > state.config.max_labels:
            raise InvalidRequest(f"labels: at most {state.config.max_labels}, found {len(labels)}")
        verbalizers = labels if isinstance(labels, dict) else {label: label for label in labels}
        names = list(verbalizers)
        continuations = await state.tokenize_labels([verbalizers[n] for n in names])
        empty = [n for n, ids in zip(names, continuations, strict=True) if not ids]
        if empty:
            raise InvalidRequest(f"labels: verbalizers of {empty} tokenize to nothing")
        state.check_classify_work(len(texts), continuations)
        encoded = await state.encode_rows(texts, card)
    except BaseException:
        state.release(lease)
        raise
    # Each input is a scoring row of the running batch: prefilled once, its labels scored in bounded chunks.
    branches = tuple(tuple(ids) for ids in continuations)
    streams = state.submit(lease, encoded, body.task_index, SamplingParams(max_new_tokens=1), client_of(request),
                           continuations=branches)  # fmt: skip
    scored = [Generation() for _ in streams]
    async for index, event in merged(streams):
        scored[index].add(event)
    probabilities = torch.softmax(torch.tensor([list(s.scores) for s in scored]), dim=-1)  # [B, L]
    results = []
    for row in probabilities.tolist():
        best = max(range(len(names)), key=row.__getitem__)
        results.append({"label": names[best], "scores": dict(zip(names, row, strict=True))})
    return {"task": body.task, "version": lease.record.version if lease else None, "results": results}
