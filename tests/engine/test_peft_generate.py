"""Why the reference is PEFT's `forward`, not its `generate` (DESIGN.md §1), shown on PEFT 0.21.2.

With transformers 5.x, `PeftModel.generate` drops a prefix-tuning prefix on rotary models: its
first-step scores equal the base model's. promptswap serves the prefix as `forward` does.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TaskRequest, Zoo
from tests.factories import DEVICE, peft_greedy


def test_peft_generate_drops_the_prefix_where_promptswap_keeps_it(zoo: Zoo) -> None:
    if zoo.arch == "gpt2":
        pytest.skip("absolute positions: PEFT's generate keeps the prefix on GPT-2")
    input_ids = [11, 12, 13, 14]
    peft_model = zoo.peft_models["prefix"]
    ids = torch.tensor([input_ids], device=DEVICE)
    with torch.no_grad():
        scores = peft_model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids),
            max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True,
        ).scores[0][0]  # fmt: skip
        base_logits = zoo.base(input_ids=ids).logits[0, -1]
    _, forward_logits = peft_greedy(peft_model, input_ids, 1)
    served = zoo.engine().next_token_logits([TaskRequest(input_ids, "prefix")])[0]

    assert (scores - base_logits).abs().max() < 1e-4, "PEFT generate ignored the prefix"
    assert (forward_logits - base_logits).abs().max() > 1e-2, "PEFT forward uses it"
    assert (served - forward_logits).abs().max() < 1e-4, "promptswap answers as forward does"
