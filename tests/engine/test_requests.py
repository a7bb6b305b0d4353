"""Requests the engine cannot serve fail with typed errors before any work is done."""

from __future__ import annotations

import pytest

from server.engine.engine import Request
from server.errors import ContextTooLong, InvalidRequest, UnknownTask
from tests.conftest import Zoo


@pytest.mark.parametrize(
    ("request_", "error", "message", "status"),
    [
        (Request([1, 2], task="nope"), UnknownTask, "task 'nope' is not registered", 404),
        (Request([1, 2], task="multitask", task_index=3), InvalidRequest, "task_index: expected 0..2", 400),
        (Request([1, 2], task="prompt_tuning", task_index=1), InvalidRequest, "task_index: expected 0..0", 400),
        (Request([]), InvalidRequest, "at least one token", 400),
        (Request([1, 10**6]), InvalidRequest, "input_ids: expected ids in", 400),
        (Request([1], max_new_tokens=0), InvalidRequest, "max_new_tokens", 400),
        (Request([1] * 200, task="prompt_tuning_long", max_new_tokens=50), ContextTooLong, "= 261", 413),
    ],
)
def test_bad_requests_raise_typed_errors(zoo: Zoo, request_, error, message, status) -> None:
    engine = zoo.engine()
    with pytest.raises(error, match=message) as caught:
        engine.generate([Request([5, 6, 7]), request_])
    assert caught.value.status_code == status


def test_context_limit_counts_virtual_tokens(zoo: Zoo) -> None:
    engine = zoo.engine()
    limit = engine.base.spec.max_positions
    fits = Request([1] * (limit - 11 - 1), task="prompt_tuning_long", max_new_tokens=1)
    assert len(engine.generate([fits])[0].token_ids) == 1
    with pytest.raises(ContextTooLong):
        engine.generate([Request([1] * (limit - 11), task="prompt_tuning_long", max_new_tokens=1)])


def test_generation_reports_usage_and_stops_at_eos(zoo: Zoo) -> None:
    engine = zoo.engine()
    free = engine.generate([Request([4, 5, 6], task="prefix", max_new_tokens=6, stop_at_eos=False)])[0]
    assert (free.prompt_tokens, free.virtual_tokens, len(free.token_ids)) == (3, 7, 6)
    # Make the third generated token the model's end-of-sequence token: generation stops there.
    engine.base = engine.base.__class__(**{**engine.base.__dict__, "eos_token_ids": frozenset({free.token_ids[2]})})
    stopped = engine.generate([Request([4, 5, 6], task="prefix", max_new_tokens=6)])[0]
    first_eos = free.token_ids.index(free.token_ids[2])
    assert stopped.token_ids == free.token_ids[: first_eos + 1]
    assert stopped.finish_reason == "eos"
