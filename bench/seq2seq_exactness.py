"""Report how closely a mixed encoder-decoder (T5) batch matches PEFT alone, next to PEFT's own batching noise.

    python -m bench.seq2seq_exactness

For each SEQ_2_SEQ_LM method on a tiny random T5 (the test model, whose weights are scaled up so
greedy tokens vary, and the same shapes at T5's usual initialisation), prints the largest
first-step logit difference, relative to the largest logit, between promptswap and PEFT's
`forward` on the request alone: served alone, served in one mixed batch of every method, and
PEFT's own forward on a batch of two copies of the request (its float32 noise from batching).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from prompt_store.artifact import load_artifact_dir
from server.engine.engine import Engine, Request
from server.engine.model import wrap_model
from tests.factories import VOCAB, load_peft, save_artifact
from tests.seq2seq_factories import SEQ2SEQ_METHODS, START_TOKEN_ID, make_t5, peft_forward


def relative(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found - expected).abs().max() / expected.abs().max())


@torch.no_grad()
def peft_batch_of_two(model: torch.nn.Module, input_ids: list[int], task_index: int | None) -> torch.Tensor:
    """PEFT's first-step logits [V] for the second of two identical rows."""
    encoder_ids = torch.tensor([input_ids, input_ids])
    kwargs: dict[str, torch.Tensor] = {"decoder_input_ids": torch.full((2, 1), START_TOKEN_ID)}
    if task_index is not None:
        embeds = model.word_embeddings(kwargs.pop("decoder_input_ids"))  # type: ignore[operator]
        kwargs |= {"decoder_inputs_embeds": embeds, "task_ids": torch.tensor([task_index] * 2)}
    return model(input_ids=encoder_ids, attention_mask=torch.ones_like(encoder_ids), **kwargs).logits[1, -1].float()


def measure(initializer_factor: float, folder: Path) -> dict[str, tuple[float, float, float]]:
    base = make_t5(initializer_factor=initializer_factor)
    engine = Engine(wrap_model(copy.deepcopy(base), torch.device("cpu")))
    generator = torch.Generator().manual_seed(0)
    requests, models = [], []
    for seed, method in enumerate(SEQ2SEQ_METHODS):
        artifact_dir = save_artifact(base, SEQ2SEQ_METHODS[method](4 + seed), folder / method, seed=seed)
        prompt = engine.build_prompt(load_artifact_dir(artifact_dir, engine.base.spec))
        length = 2 + (5 * seed) % 13
        requests.append(Request(torch.randint(3, VOCAB, (length,), generator=generator).tolist(), prompt=prompt))
        models.append(load_peft(base, artifact_dir))
    batched = engine.next_token_logits(requests)
    result = {}
    for row, (method, request, model) in enumerate(zip(SEQ2SEQ_METHODS, requests, models, strict=True)):
        task_index = 0 if method == "multitask" else None
        ids = list(request.input_ids)
        with torch.no_grad():
            expected = peft_forward(model, ids, [START_TOKEN_ID], task_index)[-1]
        alone = engine.next_token_logits([request])[0]
        noise = relative(peft_batch_of_two(model, ids, task_index), expected)
        result[method] = (relative(alone, expected), relative(batched[row], expected), noise)
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for factor in (3.0, 1.0):
            print(f"T5 (3+3 layers, d_model 64), initializer_factor={factor}: relative max |Δ first-step logit|")
            print(f"  {'method':<20}{'alone':>10}{'mixed batch':>14}{'PEFT batch of 2':>18}")
            for method, (alone, batched, noise) in measure(factor, Path(folder) / str(factor)).items():
                print(f"  {method:<20}{alone:>10.1e}{batched:>14.1e}{noise:>18.1e}")


if __name__ == "__main__":
    main()
