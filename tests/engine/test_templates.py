"""Virtual tokens placed inside the input (a template's `{prompt}`), served from the embedding form.

The reference is the model run directly on the same sequence of embeddings, [input before] +
[PEFT's prompt] + [input after], with `inputs_embeds` and no cache, one whole pass per new token.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from server.errors import InvalidRequest
from tests.conftest import TaskRequest, Zoo
from tests.factories import DEVICE, VOCAB

PLACED = ["prompt_tuning", "p_tuning_lstm", "multitask", "cpt"]
MAX_NEW_TOKENS = 6


@torch.no_grad()
def direct_greedy(zoo: Zoo, request: TaskRequest, prompt_at: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and first logits [V] from `inputs_embeds` = before + PEFT's prompt + after."""
    assert request.task is not None
    peft_model = zoo.peft_models[request.task]
    task_ids = torch.tensor([request.task_index], device=DEVICE) if request.task == "multitask" else None
    prompt = peft_model.get_prompt(batch_size=1, task_ids=task_ids)[0]  # [N, D]
    embed = zoo.base.get_input_embeddings()
    sequence, first = list(request.input_ids), None
    for _ in range(request.max_new_tokens):
        ids = torch.tensor(sequence, device=DEVICE)
        embeds = torch.cat([embed(ids[:prompt_at]), prompt, embed(ids[prompt_at:])])[None]
        logits = zoo.base(inputs_embeds=embeds).logits[0, -1].float()
        first = logits if first is None else first
        sequence.append(int(logits.argmax()))
    assert first is not None
    return sequence[len(request.input_ids) :], first


def placed_requests(seed: int) -> list[tuple[TaskRequest, int | None]]:
    """Placed prompts at the start, middle and end of inputs, beside prefix, prompt and base rows."""
    generator = torch.Generator().manual_seed(seed)
    rows: list[tuple[str | None, int | None, int]] = [
        ("prompt_tuning", 3, 0), ("p_tuning_lstm", 0, 0), ("multitask", 5, 2), ("cpt", 7, 0),
        ("prompt_tuning", None, 0), ("prefix", None, 0), (None, None, 0), ("multitask", 7, 1),
    ]  # fmt: skip
    requests = []
    for task, prompt_at, task_index in rows:
        ids = torch.randint(0, VOCAB, (7,), generator=generator).tolist()
        options = {"max_new_tokens": MAX_NEW_TOKENS, "stop_at_eos": False, "task_index": task_index}
        requests.append((TaskRequest(ids, task, options), prompt_at))
    return requests


def test_placed_prompts_equal_a_direct_inputs_embeds_computation(zoo: Zoo) -> None:
    served = zoo.engine()
    rows = placed_requests(seed=4)
    requests = [replace(served.request(r.input_ids, r.task, **r.options), prompt_at=at) for r, at in rows]
    generations = served.engine.generate(requests)
    logits = served.engine.next_token_logits(requests)
    unplaced = served.generate([r for r, _ in rows])
    for i, (request, prompt_at) in enumerate(rows):
        label = f"{zoo.arch} row {i} task={request.task} at={prompt_at}"
        if prompt_at is None:  # rows that do not place their prompt are served as before
            assert generations[i].token_ids == unplaced[i].token_ids, label
            continue
        tokens, first = direct_greedy(zoo, request, prompt_at)
        assert generations[i].token_ids == tokens, label
        assert (logits[i] - first).abs().max() < 1e-4, label
        usage = generations[i].usage
        assert usage is not None and usage.virtual_tokens == served.prompts[request.task].num_virtual_tokens


def test_placing_the_prompt_changes_the_answer(llama_zoo: Zoo) -> None:
    served = llama_zoo.engine()
    ids = [9, 8, 7, 6, 5, 4]
    before = served.request(ids, "prompt_tuning")
    placed = replace(before, prompt_at=3)
    logits = served.engine.next_token_logits([before, placed])
    assert (logits[0] - logits[1]).abs().max() > 1e-2


@pytest.mark.parametrize(("task", "prompt_at", "message"), [
    ("prefix", 2, "stores keys and values, not embeddings"),
    ("prompt_tuning", 9, "prompt_at: expected 0..6"),
    (None, 1, "virtual tokens need a task"),
])  # fmt: skip
def test_placements_that_cannot_be_served_are_refused(
    llama_zoo: Zoo, task: str | None, prompt_at: int, message: str
) -> None:
    served = llama_zoo.engine()
    request = replace(served.request([1, 2, 3, 4, 5, 6], task), prompt_at=prompt_at)
    with pytest.raises(InvalidRequest, match=message):
        served.engine.generate([request])
