"""Sampling: vectorised for the batch, but each seeded row independent of the others."""

from __future__ import annotations

import pytest
import torch

from server.engine.sampling import RowSampler, SamplingParams, sample
from server.errors import InvalidRequest
from tests.conftest import TaskRequest, Zoo

LOGITS = torch.tensor([[4.0, 3.0, 2.5, 1.0, 0.0, -1.0, -3.0, -9.0]])  # probabilities fall off by rank


def draws(params: SamplingParams, count: int = 400, logits: torch.Tensor = LOGITS) -> list[int]:
    row = RowSampler(params)
    return [int(sample(logits, [row])[0]) for _ in range(count)]


def test_top_k_and_top_p_restrict_the_choices() -> None:
    assert set(draws(SamplingParams(temperature=5.0, top_k=3, seed=1))) == {0, 1, 2}
    probs = torch.softmax(LOGITS[0], -1)
    nucleus = int((probs.cumsum(0) < 0.9).sum()) + 1  # smallest prefix holding 90%
    assert set(draws(SamplingParams(temperature=1.0, top_p=0.9, seed=2))) == set(range(nucleus))
    assert set(draws(SamplingParams(temperature=1.0, top_p=1e-6, seed=3))) == {0}


def test_sampled_frequencies_follow_the_softmax() -> None:
    observed = torch.bincount(torch.tensor(draws(SamplingParams(temperature=1.0, seed=4), 4000)), minlength=8)
    expected = torch.softmax(LOGITS[0], -1) * 4000
    assert ((observed[:3] - expected[:3]).abs() / expected[:3]).max() < 0.1


def test_each_seeded_row_draws_the_same_in_any_batch() -> None:
    params = SamplingParams(temperature=1.5, seed=11)
    alone = draws(params, 50)
    other = RowSampler(SamplingParams(temperature=1.5, seed=99))
    greedy = RowSampler(SamplingParams())
    mine = RowSampler(params)
    batch = torch.cat([LOGITS.flip(-1), LOGITS, LOGITS * 0.5])
    together = [int(sample(batch, [other, mine, greedy])[1]) for _ in range(50)]
    assert together == alone
    assert len(set(alone)) > 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (SamplingParams(temperature=-1.0), "temperature"),
        (SamplingParams(top_k=0), "top_k"),
        (SamplingParams(top_p=0.0), "top_p"),
        (SamplingParams(top_p=1.5), "top_p"),
        (SamplingParams(max_new_tokens=0), "max_new_tokens"),
        (SamplingParams(stop=("",)), "stop"),
        (SamplingParams(stop=("x",) * 17), "stop"),
    ],
)
def test_bad_parameters_name_the_field(params: SamplingParams, field: str) -> None:
    with pytest.raises(InvalidRequest, match=f"^{field}:"):
        params.check()


def test_in_the_engine_seeded_sampling_ignores_batch_composition(llama_zoo: Zoo) -> None:
    served = llama_zoo.engine()
    seeded = {"temperature": 1.2, "top_p": 0.95, "seed": 1234, "max_new_tokens": 10, "stop_at_eos": False}
    request = TaskRequest([9, 8, 7, 6, 5], "prefix", seeded)
    alone = served.generate([request])[0].token_ids
    crowd = [
        TaskRequest([1, 2, 3], "prompt_tuning", {"temperature": 1.0, "max_new_tokens": 4}),
        TaskRequest(list(range(40, 60)), None, {"max_new_tokens": 12}),
        TaskRequest([4, 4], "multitask", {"task_index": 2, "temperature": 0.7, "seed": 5}),
    ]
    together = served.generate([crowd[0], request, *crowd[1:]])[1].token_ids
    assert together == alone
    other_seed = served.generate([TaskRequest(request.input_ids, "prefix", {**seeded, "seed": 4321})])[0]
    assert other_seed.token_ids != alone


def test_temperature_zero_and_top_k_one_are_greedy(llama_zoo: Zoo) -> None:
    served = llama_zoo.engine()
    base = {"max_new_tokens": 8, "stop_at_eos": False}
    greedy = served.generate([TaskRequest([3, 1, 4, 1, 5], "cpt", base)])[0].token_ids
    for options in (
        {"temperature": 0.0, "seed": 3},
        {"temperature": 2.0, "top_k": 1},
        {"temperature": 1.0, "top_k": 1, "seed": 8},
    ):
        assert served.generate([TaskRequest([3, 1, 4, 1, 5], "cpt", {**base, **options})])[0].token_ids == greedy
