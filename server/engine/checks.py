"""Checks every kind of request shares: token ids the model knows, a sub-task its prompt has."""

from __future__ import annotations

from collections.abc import Sequence

from server.errors import InvalidRequest
from server.prompts.forms import TaskPrompt


def check_input_ids(input_ids: Sequence[int], vocab_size: int) -> None:
    if not input_ids:
        raise InvalidRequest("input_ids: expected at least one token, found none")
    bad = [t for t in input_ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequest(f"input_ids: expected ids in [0, {vocab_size}), found {bad[:5]}")


def check_task_index(prompt: TaskPrompt, task_index: int) -> None:
    if not 0 <= task_index < prompt.num_tasks:
        raise InvalidRequest(f"task_index: expected 0..{prompt.num_tasks - 1} for this task, found {task_index}")
