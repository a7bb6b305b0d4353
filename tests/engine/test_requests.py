"""Requests the engine cannot serve fail with typed errors before any work is done."""

from __future__ import annotations

import dataclasses

import pytest

from server.api.errors import status_of
from server.errors import ContextTooLong, InvalidRequest
from tests.conftest import TaskRequest, Zoo


@pytest.mark.parametrize(
    ("request_", "error", "message", "status"),
    [
        (TaskRequest([1, 2], "multitask", {"task_index": 3}), InvalidRequest, "task_index: expected 0..2", 400),
        (TaskRequest([1, 2], "prompt_tuning", {"task_index": 1}), InvalidRequest, "task_index: expected 0..0", 400),
        (TaskRequest([]), InvalidRequest, "at least one token", 400),
        (TaskRequest([1, 10**6]), InvalidRequest, "input_ids: expected ids in", 400),
        (TaskRequest([1], options={"max_new_tokens": 0}), InvalidRequest, "max_new_tokens", 400),
        (TaskRequest([1] * 200, "prompt_tuning_long", {"max_new_tokens": 50}), ContextTooLong, "new tokens = 261", 413),
    ],
)
def test_bad_requests_raise_typed_errors(zoo: Zoo, request_, error, message, status) -> None:
    served = zoo.engine()
    with pytest.raises(error, match=message) as caught:
        served.generate([TaskRequest([5, 6, 7]), request_])
    assert status_of(caught.value) == status


def test_context_limit_counts_virtual_tokens(zoo: Zoo) -> None:
    served = zoo.engine()
    limit = served.engine.base.spec.max_positions
    fits = TaskRequest([1] * (limit - 11 - 1), "prompt_tuning_long", {"max_new_tokens": 1})
    assert len(served.generate([fits])[0].token_ids) == 1
    with pytest.raises(ContextTooLong):
        served.generate([TaskRequest([1] * (limit - 11), "prompt_tuning_long", {"max_new_tokens": 1})])


def test_generation_reports_usage_and_stops_at_eos(zoo: Zoo) -> None:
    served = zoo.engine()
    options = {"max_new_tokens": 6, "stop_at_eos": False}
    free = served.generate([TaskRequest([4, 5, 6], "prefix", options)])[0]
    assert free.usage is not None
    assert (free.usage.prompt_tokens, free.usage.virtual_tokens, free.usage.completion_tokens) == (3, 7, 6)
    # Make the third generated token the model's end-of-sequence token: generation stops there.
    eos = free.token_ids[2]
    served.engine.base = dataclasses.replace(served.engine.base, eos_token_ids=frozenset({eos}))
    stopped = served.generate([TaskRequest([4, 5, 6], "prefix", {"max_new_tokens": 6})])[0]
    first_eos = free.token_ids.index(eos)
    assert stopped.token_ids == free.token_ids[: first_eos + 1]
    assert stopped.finish_reason == "eos"
