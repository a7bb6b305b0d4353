"""POST /v1/generate and POST /v1/classify."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from prompt_store.errors import UserError
from server.api.client_limit import client_of
from server.api.encoder_classify import classify_with_heads
from server.api.responses import INFERENCE, ClassifyAnswer, GenerateAnswer, answers
from server.api.schemas import ClassifyBody, GenerateBody
from server.api.service import labelled, logprob_json, start_generation, state_of, usage_json
from server.api.streaming import DONE, collect, merged, sse, sse_error
from server.engine.async_engine import RequestStream
from server.engine.sampling import SamplingParams
from server.errors import InvalidRequest

router = APIRouter()


@router.post("/v1/generate", response_model=None, responses=answers(GenerateAnswer, INFERENCE, streams=True))
async def generate(body: GenerateBody, request: Request) -> dict[str, Any] | StreamingResponse:
    state = state_of(request)
    rows = state.rows(body.inputs)
    started = await start_generation(
        state, body.task, rows, body.parameters, client_of(request), version=body.version, task_index=body.task_index
    )
    tokenizer = state.tokenizer
    if body.stream:
        return StreamingResponse(stream_events(started.streams, tokenizer), media_type="text/event-stream")
    outputs = []
    for r in await collect(started.streams):
        output = {"text": r.text, "token_ids": r.token_ids, "finish_reason": r.finish_reason,
                  "usage": usage_json(r.usage)}  # fmt: skip
        if body.parameters.logprobs:
            output["logprobs"] = [logprob_json(entry, tokenizer) for entry in r.logprobs]
        outputs.append(output)
    return {"task": body.task, "version": started.version, "outputs": outputs}


async def stream_events(streams: list[RequestStream], tokenizer: Any) -> AsyncIterator[str]:
    try:
        async for index, event in merged(streams):
            if event.token_id is not None:
                token: dict[str, Any] = {"index": index, "text": event.text, "token_id": event.token_id}
                if event.logprob is not None:
                    token["logprob"] = logprob_json(event.logprob, tokenizer)
                yield sse(token)
            if event.finish_reason is not None and event.usage is not None:
                yield sse({"index": index, "finish_reason": event.finish_reason, "usage": usage_json(event.usage)})
    except UserError as error:  # the engine failed mid-stream
        yield sse_error(error)
    yield DONE


@router.post("/v1/classify", response_model=None, responses=answers(ClassifyAnswer, INFERENCE))
async def classify(body: ClassifyBody, request: Request) -> dict[str, Any]:
    state = state_of(request)
    if state.engine.kind.classifier is not None:
        return await classify_with_heads(state, body)
    texts = state.rows(body.inputs)
    async with state.lease_for_rows(body.task, body.version) as lease:
        card = lease.record.card if lease else None
        labels = body.labels if body.labels is not None else (card.labels if card else None)
        if not labels:
            raise InvalidRequest(
                "labels: the task card has none; pass `labels` (a list, or {label: verbalizer}), "
                "or upload the task again with a card.json that has them"
            )
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
        # Each input is a scoring row of the running batch: prefilled once, its labels scored in bounded chunks.
        branches = tuple(tuple(ids) for ids in continuations)
        streams = state.submit(lease, encoded, body.task_index, SamplingParams(max_new_tokens=1), client_of(request),
                               continuations=branches)  # fmt: skip
    scored = await collect(streams)
    probabilities = state.engine.label_probabilities([s.scores for s in scored])
    return {
        "task": body.task,
        "version": lease.record.version if lease else None,
        "results": [labelled(names, row) for row in probabilities],
    }
