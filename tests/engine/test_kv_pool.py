"""The KV pool: task prefixes held once and read by every row of the task, rows that only pay for
their own tokens, prompts prefilled in chunks while others decode, and label scoring in the batch.
Every answer is checked against PEFT alone."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prompt_store.artifact import load_artifact_dir
from server.engine.attention import attention_with_lse, attention_with_lse_math
from server.engine.causal import decode_groups
from server.engine.request import Generation, Request
from server.engine.sampling import SamplingParams
from server.engine.scheduler import SchedulerConfig
from tests.conftest import Served, TaskRequest, Zoo
from tests.engine.test_mixed_batch import peft_answer
from tests.factories import DEVICE, VOCAB, load_peft, make_artifact, peft_greedy

LONG_PREFIX = 128


@pytest.fixture(scope="module")
def long_prefix(llama_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A prefix-tuning task with 128 virtual tokens, and PEFT's model for it."""
    folder = make_artifact(llama_zoo.base, "prefix", LONG_PREFIX, tmp_path_factory.mktemp("long-prefix"), seed=11)
    return folder, load_peft(llama_zoo.base, folder)


def random_ids(count: int, length: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (length,), generator=generator).tolist() for _ in range(count)]


def test_64_rows_of_one_task_hold_its_prefix_once(llama_zoo: Zoo, long_prefix: tuple[Path, torch.nn.Module]) -> None:
    """64 rows of a 128-token prefix task next to one row of another: the KV bytes in use are the
    rows' own tokens plus one prefix, and every row gets PEFT's answer alone."""
    folder, peft_model = long_prefix
    served = llama_zoo.engine()
    prompt = served.engine.build_prompt(load_artifact_dir(folder, served.engine.base.spec))
    inputs = random_ids(64, 9, seed=1)
    params = SamplingParams(max_new_tokens=5, stop_at_eos=False)
    requests = [Request(ids, prompt, params=params) for ids in inputs]
    other = served.request(random_ids(1, 5, seed=2)[0], "prompt_tuning", max_new_tokens=5, stop_at_eos=False)
    core = served.engine.core(SchedulerConfig(max_batch_size=65))
    for request in [*requests, other]:
        core.add(request)
    results: dict[int, Generation] = {}
    for event in core.step():  # every row prefilled, one token each
        results.setdefault(event.request_id, Generation()).add(event)
    bytes_per_token = core.runner.kv_bytes_per_token
    rows, prefixes = core.kv_bytes()
    assert rows == (64 * 9 + 5) * bytes_per_token  # own tokens only: no row holds a prefix
    assert prefixes == prompt.prefixes[0].nbytes + other.prompt.prefixes[0].nbytes  # type: ignore[union-attr]
    gauge = core.metrics.registry.get_sample_value
    assert gauge("promptswap_kv_row_bytes") == rows and gauge("promptswap_kv_prefix_bytes") == prefixes
    while core.has_work:
        for event in core.step():
            results.setdefault(event.request_id, Generation()).add(event)
    for row in (0, 17, 63):  # PEFT alone is slow: a few rows, the first, one inside and the last
        assert results[row].token_ids == peft_greedy(peft_model, inputs[row], 5)[0], row
    alone, _ = peft_answer(llama_zoo, TaskRequest(other.input_ids, "prompt_tuning", {"max_new_tokens": 5}))
    assert results[64].token_ids == alone
    assert core.kv_bytes() == (0, 0)


def test_rows_that_join_together_are_read_as_one_group_and_match_peft(llama_zoo: Zoo) -> None:
    """Equal inputs and reservations admitted together: their runs are equally spaced and decode reads
    them in one strided call, beside a prefix task's rows and rows of other lengths."""
    served = llama_zoo.engine()
    cohort = [TaskRequest(ids, "prefix", {"max_new_tokens": 6, "stop_at_eos": False}) for ids in random_ids(6, 7, 3)]
    others = [TaskRequest(ids, None, {"max_new_tokens": 6, "stop_at_eos": False}) for ids in random_ids(3, 4, 4)]
    requests = [*cohort, *others]
    core = served.engine.core(SchedulerConfig())
    ids = [core.add(served.request(r.input_ids, r.task, **r.options)) for r in requests]
    results = {request_id: Generation() for request_id in ids}
    for event in core.step():
        results[event.request_id].add(event)
    starts = [core.scheduler.running[request_id].segment for request_id in ids[: len(cohort)]]
    assert len({b - a for a, b in itertools.pairwise(starts)}) == 1  # equally spaced runs
    while core.has_work:
        for event in core.step():
            results[event.request_id].add(event)
    for request, request_id in zip(requests, ids, strict=True):
        assert results[request_id].token_ids == peft_answer(llama_zoo, request)[0]
    assert core.scheduler.slots.used == 0


@pytest.mark.parametrize(
    ("rows", "groups"),
    [
        ([(0, 5), (16, 5), (32, 5)], [(0, 16, 3, 5)]),
        ([(0, 5), (16, 5), (48, 5)], [(0, 16, 2, 5), (48, 0, 1, 5)]),  # the spacing changes
        ([(0, 5), (16, 6), (32, 6)], [(0, 0, 1, 5), (16, 16, 2, 6)]),  # the length changes
        ([(0, 20), (16, 20)], [(0, 0, 1, 20), (16, 0, 1, 20)]),  # a view would run into the next row
    ],
)
@pytest.mark.parametrize("merged", [False, True])
def test_decode_groups(rows: list[tuple[int, int]], groups: list[tuple[int, int, int, int]], merged: bool) -> None:
    found = [(g.start, g.stride, g.count, g.length) for g in decode_groups([(*row, merged) for row in rows])]
    assert found == groups
    mixed = decode_groups([(start, length, i % 2 == 1) for i, (start, length) in enumerate(rows)])
    assert [g.count for g in mixed] == [1] * len(rows)  # rows that read a prefix are not grouped with rows that do not


def test_a_long_prompt_prefilled_in_chunks_while_other_rows_decode(llama_zoo: Zoo) -> None:
    served = llama_zoo.engine()
    short = [TaskRequest(ids, task, {"max_new_tokens": 8, "stop_at_eos": False})
             for ids, task in zip(random_ids(3, 5, 5), ["prefix", None, "prompt_tuning"], strict=True)]  # fmt: skip
    long = [TaskRequest(ids, task, {"max_new_tokens": 4, "stop_at_eos": False})
            for ids, task in zip(random_ids(2, 150, 6), ["prefix", "multitask"], strict=True)]  # fmt: skip
    core = served.engine.core(SchedulerConfig(max_prefill_tokens=16))
    ids = [core.add(served.request(r.input_ids, r.task, **r.options)) for r in short]
    results = {request_id: Generation() for request_id in ids}
    for event in core.step():  # the short rows are prefilled and decoding
        results[event.request_id].add(event)
    ids += [core.add(served.request(r.input_ids, r.task, **r.options)) for r in long]
    results |= {request_id: Generation() for request_id in ids[len(short) :]}
    steps_while_prefilling = 0
    while core.has_work:
        prefilling = any(not s.prefilled for s in core.running)
        events = core.step()
        steps_while_prefilling += prefilling and any(e.token_id is not None for e in events)
        for event in events:
            results[event.request_id].add(event)
    assert steps_while_prefilling >= 8  # 300 prompt tokens at 16 a step: the short rows went on meanwhile
    for request, request_id in zip([*short, *long], ids, strict=True):
        assert results[request_id].token_ids == peft_answer(llama_zoo, request)[0], request.task


def test_a_replaced_task_keeps_serving_its_running_rows_the_old_version(llama_zoo: Zoo) -> None:
    """Rows hold the version they were admitted with; rows admitted after the swap get the new one."""
    served = llama_zoo.engine()
    old, new = served.prompts["prefix"], served.prompts["prefix_projection"]
    inputs = random_ids(4, 6, seed=8)
    params = SamplingParams(max_new_tokens=6, stop_at_eos=False)
    core = served.engine.core(SchedulerConfig())
    before = [core.add(Request(ids, old, params=params)) for ids in inputs[:2]]
    results: dict[int, Generation] = {}
    for _ in range(3):
        for event in core.step():
            results.setdefault(event.request_id, Generation()).add(event)
    after = [core.add(Request(ids, new, params=params)) for ids in inputs[2:]]
    while core.has_work:
        for event in core.step():
            results.setdefault(event.request_id, Generation()).add(event)
    for request_id, ids in zip(before, inputs[:2], strict=True):
        expected = peft_answer(llama_zoo, TaskRequest(ids, "prefix", {"max_new_tokens": 6}))[0]
        assert results[request_id].token_ids == expected
    for request_id, ids in zip(after, inputs[2:], strict=True):
        expected = peft_answer(llama_zoo, TaskRequest(ids, "prefix_projection", {"max_new_tokens": 6}))[0]
        assert results[request_id].token_ids == expected


POOL = [("prefix", 7), ("prefix", 7), ("prompt_tuning", 7), ("prompt_tuning", 3), (None, 7), ("cartridge", 3)]


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(
        st.tuples(st.integers(0, len(POOL) - 1), st.integers(0, 6), st.integers(1, 6)), min_size=2, max_size=10
    ),
    cancel=st.sets(st.integers(0, 9), max_size=3),
    max_prefill_tokens=st.integers(2, 30),
)
def test_shared_prefix_rows_join_and_leave_in_any_order(
    llama_zoo: Zoo, picks: list[tuple[int, int, int]], cancel: set[int], max_prefill_tokens: int
) -> None:
    """Rows of a few prefix tasks with equal lengths (so they group), arriving, finishing and being
    cancelled at random steps: every row that runs to its end gets PEFT's answer alone."""
    served: Served = llama_zoo.engine()
    core = served.engine.core(SchedulerConfig(max_batch_size=6, max_prefill_tokens=max_prefill_tokens))
    inputs = random_ids(len(POOL), 7, seed=9)
    keys: dict[int, int] = {}
    results: dict[int, Generation] = {}
    step = 0
    while step <= 6 or core.has_work:
        for key, (index, arrival, new_tokens) in enumerate(picks):
            if arrival == step:
                task, length = POOL[index]
                request = served.request(inputs[index][:length], task, max_new_tokens=new_tokens, stop_at_eos=False)
                keys[core.add(request)] = key
        for request_id, key in keys.items():
            if key in cancel and step == picks[key][1] + 2:
                core.cancel(request_id)
        for event in core.step():
            results.setdefault(keys[event.request_id], Generation()).add(event)
        step += 1
    for key, (index, _, new_tokens) in enumerate(picks):
        if results[key].finish_reason == "cancelled":
            continue
        task, length = POOL[index]
        request = TaskRequest(inputs[index][:length], task, {"max_new_tokens": new_tokens})
        assert results[key].token_ids == peft_answer(llama_zoo, request)[0]
    assert core.scheduler.slots.used == 0


def test_label_scores_in_chunks_equal_peft(llama_zoo: Zoo, long_prefix: tuple[Path, torch.nn.Module]) -> None:
    """Scoring 300 three-token continuations takes two steps of scoring chunks; each sum of
    log-probabilities equals PEFT's forward over input + continuation."""
    served = llama_zoo.engine()
    generator = torch.Generator().manual_seed(12)
    continuations = [torch.randint(3, VOCAB, (1 + i % 3,), generator=generator).tolist() for i in range(300)]
    rows = [TaskRequest(random_ids(1, 6, 13)[0], task) for task in ("prefix", None)]
    scores = served.engine.score_continuations([served.request(r.input_ids, r.task) for r in rows], continuations)
    assert scores.shape == (2, 300)
    for row, request in enumerate(rows):
        model = llama_zoo.peft_models[request.task] if request.task else llama_zoo.base
        for index in (0, 1, 2, 150, 298, 299):
            tokens = continuations[index]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([[*request.input_ids, *tokens]], device=DEVICE)).logits[0].float()
            log_probs = torch.log_softmax(logits, -1)
            expected = sum(float(log_probs[len(request.input_ids) - 1 + k, t]) for k, t in enumerate(tokens))
            assert abs(float(scores[row, index]) - expected) < 1e-4, (row, index)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_lse_in_plain_matrix_products_equals_the_cpu_kernel(causal: bool) -> None:
    """The portable path (any device) and the CPU kernel agree, masks and log-sum-exp included."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=generator) for _ in range(3))
    mask = None if causal else torch.zeros(6, 6).masked_fill(torch.rand(6, 6, generator=generator) > 0.7, float("-inf"))
    if mask is not None:
        mask.fill_diagonal_(0.0)
    kernel = attention_with_lse(q, k, v, 0.3, causal=causal, mask=mask)
    portable = attention_with_lse_math(q, k, v, 0.3, causal=causal, mask=mask)
    for a, b in zip(kernel, portable, strict=True):
        assert (a - b).abs().max() < 1e-5
