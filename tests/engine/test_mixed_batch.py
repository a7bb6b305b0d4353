"""The most important property: every row of a mixed batch gets exactly what PEFT gives that request alone."""

from __future__ import annotations

import torch

from tests.conftest import TASKS, TaskRequest, Zoo
from tests.engine.join_leave import Row, assert_join_and_leave, join_and_leave
from tests.factories import VOCAB, peft_greedy

MAX_NEW_TOKENS = 8


def mixed_requests(seed: int = 0) -> list[TaskRequest]:
    """Every method, two tasks twice, two sub-tasks of one multitask artifact, base-model rows, ragged inputs."""
    generator = torch.Generator().manual_seed(seed)
    rows: list[tuple[str | None, int]] = [(task, 0) for task in TASKS]
    rows += [("multitask", 2), ("prefix", 0), ("prompt_tuning", 0), (None, 0), (None, 0)]
    requests = []
    for i, (task, task_index) in enumerate(rows):
        length = 1 + (i * 7) % 17
        input_ids = torch.randint(0, VOCAB, (length,), generator=generator).tolist()
        options = {"task_index": task_index, "max_new_tokens": MAX_NEW_TOKENS, "stop_at_eos": False}
        requests.append(TaskRequest(input_ids, task, options))
    return requests


def peft_answer(zoo: Zoo, request: TaskRequest) -> tuple[list[int], torch.Tensor]:
    model = zoo.peft_models[request.task] if request.task else zoo.base
    task_index = request.task_index if request.task == "multitask" else None
    return peft_greedy(model, request.input_ids, request.max_new_tokens, task_index)


def test_every_row_of_a_mixed_batch_matches_peft_alone(zoo: Zoo) -> None:
    served = zoo.engine()
    requests = mixed_requests()
    generations = served.generate(requests)
    logits = served.next_token_logits(requests)
    for i, request in enumerate(requests):
        tokens, first_logits = peft_answer(zoo, request)
        label = f"{zoo.arch} row {i} task={request.task} index={request.task_index}"
        assert generations[i].token_ids == tokens, label
        assert (logits[i] - first_logits).abs().max() < 1e-4, label
        assert generations[i].finish_reason == "length"


def test_each_artifact_changes_the_answer(zoo: Zoo) -> None:
    """A server that ignored the prompt would fail the test above: each task moves the logits."""
    served = zoo.engine()
    input_ids = [3, 14, 15, 92, 65]
    base = served.next_token_logits([TaskRequest(input_ids)])[0]
    for task in TASKS:
        with_task = served.next_token_logits([TaskRequest(input_ids, task)])[0]
        assert (with_task - base).abs().max() > 1e-2, task


def test_multitask_sub_tasks_differ_and_match_peft(zoo: Zoo) -> None:
    served = zoo.engine()
    requests = [TaskRequest([7, 7, 1, 200], "multitask", {"task_index": t}) for t in (0, 1, 2)]
    logits = served.next_token_logits(requests)
    for t, request in enumerate(requests):
        _, expected = peft_answer(zoo, request)
        assert (logits[t] - expected).abs().max() < 1e-4
    assert (logits[0] - logits[1]).abs().max() > 1e-2


def test_rows_join_and_leave_between_steps(zoo: Zoo) -> None:
    """A batch that drops finished rows and takes in newly prefilled ones keeps every answer exact."""
    served = zoo.engine()
    requests = mixed_requests(seed=3)
    expected = [peft_answer(zoo, r)[0] for r in requests]
    runner = served.engine.runner
    rows = [
        Row(i, r.input_ids, served.engine.check(served.request(r.input_ids, r.task, **r.options)))
        for i, r in enumerate(requests)
    ]
    produced = join_and_leave(runner, rows, MAX_NEW_TOKENS)
    assert_join_and_leave(produced, expected, zoo.arch)


def test_prompt_kv_is_computed_once_per_task(zoo: Zoo) -> None:
    """Serving never runs the model over virtual tokens again: the built form is reused."""
    served = zoo.engine()
    runner = served.engine.runner
    calls = []
    original = runner.encode_prompt
    runner.encode_prompt = lambda e: calls.append(e) or original(e)  # type: ignore[method-assign]
    served.generate([TaskRequest([1, 2, 3], "prompt_tuning", {"max_new_tokens": 3})] * 3)
    assert calls == []
