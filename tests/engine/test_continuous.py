"""Continuous batching, driven step by step: requests join and leave a running batch between steps."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.api.errors import status_of
from server.engine.core import EngineCore
from server.engine.request import Generation
from server.engine.scheduler import QueueFull, SchedulerConfig
from tests.conftest import TASKS, Served, TaskRequest, Zoo
from tests.engine.test_mixed_batch import peft_answer
from tests.factories import VOCAB

POOL_SIZE = 10
LONGEST = 8


@pytest.fixture(scope="module")
def pool(llama_zoo: Zoo) -> list[tuple[TaskRequest, list[int]]]:
    """Requests over every task and none, with PEFT's greedy answer for LONGEST tokens."""
    generator = torch.Generator().manual_seed(7)
    tasks = [*TASKS, None, None]
    requests = []
    for i in range(POOL_SIZE):
        task = tasks[i % len(tasks)]
        length = 1 + (i * 5) % 13
        input_ids = torch.randint(3, VOCAB, (length,), generator=generator).tolist()
        options = {"task_index": i % 3 if task == "multitask" else 0, "max_new_tokens": LONGEST}
        request = TaskRequest(input_ids, task, {**options, "stop_at_eos": False})
        requests.append((request, peft_answer(llama_zoo, request)[0]))
    return requests


def run(core: EngineCore, arrivals: dict[int, list[int]], requests: dict[int, object]) -> dict[int, Generation]:
    """Step the core, adding each request at its arrival step; returns results by caller key."""
    results: dict[int, Generation] = {}
    ids: dict[int, int] = {}
    step = 0
    while step <= max(arrivals, default=0) or core.has_work:
        for key in arrivals.get(step, []):
            ids[core.add(requests[key])] = key  # type: ignore[arg-type]
            results[key] = Generation()
        for event in core.step():
            results[ids[event.request_id]].add(event)
        step += 1
    return results


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(
        st.tuples(st.integers(0, POOL_SIZE - 1), st.integers(0, 12), st.integers(1, LONGEST)), min_size=1, max_size=8
    ),
    max_batch_size=st.integers(1, 5),
    max_prefill_tokens=st.integers(1, 40),
)
def test_greedy_results_equal_peft_alone_for_any_arrivals(
    llama_zoo: Zoo, pool: list[tuple[TaskRequest, list[int]]], picks, max_batch_size: int, max_prefill_tokens: int
) -> None:
    served: Served = llama_zoo.engine()
    config = SchedulerConfig(max_batch_size=max_batch_size, max_prefill_tokens=max_prefill_tokens)
    core = served.engine.core(config)
    requests, arrivals = {}, {}
    for key, (index, arrival, max_new_tokens) in enumerate(picks):
        spec, _ = pool[index]
        requests[key] = served.request(spec.input_ids, spec.task, **{**spec.options, "max_new_tokens": max_new_tokens})
        arrivals.setdefault(arrival, []).append(key)
    results = run(core, arrivals, requests)
    for key, (index, _, max_new_tokens) in enumerate(picks):
        assert results[key].token_ids == pool[index][1][:max_new_tokens]
        assert results[key].finish_reason == "length"
    assert not core.has_work and not core.scheduler.running and core.scheduler.slots.used == 0


def test_cancelled_request_leaves_at_the_next_step(llama_zoo: Zoo) -> None:
    served = llama_zoo.engine()
    core = served.engine.core(SchedulerConfig())
    done = []
    ids = []
    for i in range(3):
        request = served.request([5 + i, 6, 7], "prompt_tuning", max_new_tokens=20, stop_at_eos=False)
        ids.append(core.add(type(request)(**{**request.__dict__, "on_done": lambda i=i: done.append(i)})))
    core.step()
    assert len(core.running) == 3
    held = core.scheduler.slots.used
    core.cancel(ids[1])
    events = core.step()
    assert len(core.running) == 2 and core.scheduler.slots.used < held  # its KV slots are free
    assert [e.finish_reason for e in events if e.request_id == ids[1]] == ["cancelled"]
    assert done == [1] and ids[1] not in core.scheduler.running
    core.cancel(ids[0])
    core.cancel(ids[2])
    core.step()
    assert not core.running and not core.has_work and sorted(done) == [0, 1, 2]


def test_cancelled_while_waiting_never_runs(llama_zoo: Zoo) -> None:
    served = llama_zoo.engine()
    core = served.engine.core(SchedulerConfig(max_batch_size=1))
    first = core.add(served.request([1, 2], max_new_tokens=3))
    second = core.add(served.request([3, 4], max_new_tokens=3))
    core.cancel(second)
    events = []
    while core.has_work:
        events += core.step()
    assert [e.finish_reason for e in events if e.request_id == second] == ["cancelled"]
    assert not [e for e in events if e.request_id == second and e.token_id is not None]
    assert [e.finish_reason for e in events if e.request_id == first and e.finish_reason] == ["length"]


def test_a_full_queue_refuses_with_429(llama_zoo: Zoo) -> None:
    served = llama_zoo.engine()
    core = served.engine.core(SchedulerConfig(max_waiting=2))
    core.add(served.request([1], max_new_tokens=2))
    core.add(served.request([2], max_new_tokens=2))
    with pytest.raises(QueueFull) as caught:
        core.add(served.request([3], max_new_tokens=2))
    assert status_of(caught.value) == 429
    assert len(core.sequences) == 2  # the refused request left nothing behind
    core.step()
    core.add(served.request([3], max_new_tokens=2))  # admitted rows free queue slots


def speak_words(served: Served) -> None:
    """Make the served model's greedy text real words: the output rows of tokens that are whole ASCII word
    pieces are amplified and every other row is zeroed, so the argmax is always a word piece."""
    tokenizer = served.engine.tokenizer
    assert tokenizer is not None
    words = [i for i in range(VOCAB) if re.fullmatch(r" ?[A-Za-z]{2,}", tokenizer.decode([i]))]
    head = served.engine.base.model.get_output_embeddings().weight  # [V, D]
    keep = torch.zeros(len(head), dtype=torch.bool, device=head.device)
    keep[words] = True
    with torch.no_grad():
        head[~keep] = 0.0
        head[keep] *= 10.0


def test_a_stop_string_ends_the_generation_with_the_token_that_completes_it(llama_zoo: Zoo) -> None:
    """The stop string is real words spanning a token boundary; the answer keeps exactly the tokens up to
    the one that completes it (no token after), and the text up to where it starts."""
    served = llama_zoo.engine()
    speak_words(served)
    tokenizer = llama_zoo.tokenizer
    assert tokenizer is not None
    prompt = tokenizer("Review: fine.")["input_ids"]
    free = served.generate([TaskRequest(prompt, "prefix", {"max_new_tokens": 16, "stop_at_eos": False})])[0]
    assert re.fullmatch(r"[A-Za-z ]+", free.text), free.text
    assert free.text == tokenizer.decode(free.token_ids, skip_special_tokens=True)
    pieces = [tokenizer.decode([token]) for token in free.token_ids]
    stop = pieces[5][-2:] + pieces[6][:2]  # the end of token 5 and the start of token 6
    cut = free.text.index(stop)
    completes = next(n for n in range(1, 17) if stop in tokenizer.decode(free.token_ids[:n]))
    stopped = served.generate([TaskRequest(prompt, "prefix", {"max_new_tokens": 16, "stop": (stop,)})])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut]
    assert stopped.token_ids == free.token_ids[:completes]


def test_metrics_count_tokens_and_steps(llama_zoo: Zoo) -> None:
    served = llama_zoo.engine()
    core = served.engine.core(SchedulerConfig(max_batch_size=2))
    for i in range(3):
        core.add(served.request([i + 1, 2, 3], "prefix", max_new_tokens=4, stop_at_eos=False))
    assert core.metrics.registry.get_sample_value("promptswap_queue_depth") == 3
    while core.has_work:
        core.step()
    sample = core.metrics.registry.get_sample_value
    assert sample("promptswap_generated_tokens_total") == 12
    assert sample("promptswap_prefill_tokens_total") == 9
    assert sample("promptswap_requests_finished_total", {"reason": "length"}) == 3
    assert sample("promptswap_prefill_step_seconds_count") == 2  # 2 rows, then the third when one finished
    assert sample("promptswap_decode_step_seconds_count") >= 4
    assert sample("promptswap_batch_size") == 0 and sample("promptswap_queue_depth") == 0
