"""bfloat16: the same mixed batch agrees with PEFT run in bfloat16, up to ties that bfloat16 cannot break."""

from __future__ import annotations

import copy

import torch

from tests.conftest import Zoo
from tests.engine.test_mixed_batch import mixed_requests
from tests.factories import load_peft, peft_greedy


def test_mixed_batch_in_bfloat16_agrees_with_peft_in_bfloat16(zoo: Zoo) -> None:
    """Every row either equals PEFT's tokens or first differs where PEFT's own logits make promptswap's
    token a tie within two bfloat16 steps of the best (a batch and a lone row round differently)."""
    served = zoo.engine(torch.bfloat16)
    # PEFT's reference runs on its own copy of the weights: the served model carries promptswap's hooks.
    base = copy.deepcopy(zoo.base).to(torch.bfloat16)
    requests = mixed_requests(seed=5)
    generations = served.generate(requests)
    agreed = 0
    for i, (request, generation) in enumerate(zip(requests, generations, strict=True)):
        model = load_peft(base, zoo.folders[request.task]) if request.task else base
        task_index = request.task_index if request.task == "multitask" else None
        tokens, _ = peft_greedy(model, request.input_ids, request.max_new_tokens, task_index)
        if generation.token_ids == tokens:
            agreed += 1
            continue
        step = next(k for k, (a, b) in enumerate(zip(tokens, generation.token_ids, strict=True)) if a != b)
        _, logits = peft_greedy(model, request.input_ids + tokens[:step], 1, task_index)
        best = logits.max()
        tie = 2 * torch.finfo(torch.bfloat16).eps * float(best.abs())  # bfloat16 rounding at that size, twice
        assert best - logits[generation.token_ids[step]] <= tie, f"{zoo.arch} row {i} task={request.task} step {step}"
    print(f"bfloat16 {zoo.arch}: {agreed}/{len(requests)} rows identical to PEFT, the rest differ only at ties")
    assert agreed >= len(requests) // 2
