"""POST /v1/classify on an encoder classifier: each task's own head scores the input.

The response has the shape of API.md's classify; `scores` are the softmax of the head's logits.
Label names come from the request's `labels`, else the task card's (a list, or a dict's keys),
else `LABEL_0`, `LABEL_1`, ... as transformers names them.
"""

from __future__ import annotations

from typing import Any

from prompt_store.records import TaskCard
from server.api.schemas import ClassifyBody
from server.api.service import ServerState, labelled
from server.engine.engine import Request as EngineRequest
from server.errors import InvalidRequest
from server.prompts.encoder_forms import EncoderPrompt


async def classify_with_heads(state: ServerState, body: ClassifyBody) -> dict[str, Any]:
    if body.task is None:
        raise InvalidRequest("task: this model is an encoder classifier; name a task, whose head scores the input")
    texts = state.rows(body.inputs)
    async with state.lease(body.task, body.version) as lease:
        assert lease is not None and isinstance(lease.prompt, EncoderPrompt)
        card = lease.record.card
        names = label_names(body.labels, card, lease.prompt.head.num_labels)
        # Cards on encoders cannot place {prompt} (refused at upload): every row's prompt comes first.
        inputs = [row.input_ids for row in await state.encode_rows(texts, card)]
        rows = [EngineRequest(input_ids, lease.prompt, body.task_index) for input_ids in inputs]
        logits = await state.async_engine.run(lambda: state.engine.classify(rows))
        probabilities = state.engine.label_probabilities(logits)
        results = [labelled(names, row) for row in probabilities]
        return {"task": body.task, "version": lease.record.version, "results": results}


def label_names(requested: list[str] | dict[str, str] | None, card: TaskCard | None, num_labels: int) -> list[str]:
    """One name per output of the head, in the head's order."""
    if requested is not None:
        names = list(requested)
        if len(names) != num_labels:
            raise InvalidRequest(f"labels: this task's head scores {num_labels} labels, found {len(names)} names")
        return names
    if card is not None and card.labels is not None:
        return list(card.labels)  # checked against the head at upload
    return [f"LABEL_{i}" for i in range(num_labels)]
