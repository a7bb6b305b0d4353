"""Report how closely promptswap's mixed batch matches PEFT alone, and how large each runtime form is.

    python -m bench.exactness

Prints, per architecture and method, the largest first-step logit difference between a row of
one mixed batch and PEFT's `forward` on that request alone (float32), and the byte size of each
runtime form for a 20-token prompt on a model shaped like SmolLM2-135M (random weights).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel

from prompt_store.artifact import load_artifact_dir
from server.engine.engine import Engine, Request
from server.engine.model import wrap_model
from tests.factories import ARCHITECTURES, METHODS, VOCAB, load_peft, make_artifact, make_model, peft_greedy


def max_logit_differences(arch: str, folder: Path) -> dict[str, float]:
    base = make_model(arch)
    engine = Engine(wrap_model(copy.deepcopy(base), torch.device("cpu")))
    generator = torch.Generator().manual_seed(0)
    requests = []
    for seed, method in enumerate(METHODS):
        artifact_dir = make_artifact(base, method, 4 + seed, folder / arch / method, seed=seed)
        prompt = engine.build_prompt(load_artifact_dir(artifact_dir, engine.base.spec))
        length = 2 + (5 * seed) % 13
        requests.append(Request(torch.randint(0, VOCAB, (length,), generator=generator).tolist(), prompt=prompt))
    logits = engine.next_token_logits(requests)
    result = {}
    for row, (method, request) in enumerate(zip(METHODS, requests, strict=True)):
        reference = load_peft(base, folder / arch / method)
        task_index = 0 if method == "multitask" else None
        _, expected = peft_greedy(reference, list(request.input_ids), 1, task_index)
        result[method] = float((logits[row] - expected).abs().max())
    return result


def smollm_shaped_llama() -> PreTrainedModel:
    """A Llama with SmolLM2-135M's shapes and random weights."""
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def form_sizes(folder: Path) -> dict[str, dict[str, int]]:
    base = smollm_shaped_llama()
    engine = Engine(wrap_model(base, torch.device("cpu")))
    sizes = {}
    for method in ("prompt_tuning", "prefix", "multitask"):
        artifact_dir = make_artifact(base, method, 20, folder / "smollm" / method, seed=0)
        prompt = engine.build_prompt(load_artifact_dir(artifact_dir, engine.base.spec))
        sizes[method] = {
            "prefix_kv_bytes_per_sub_task": prompt.prefixes[0].nbytes,
            "embedding_bytes_per_sub_task": prompt.embeddings[0].nbytes if prompt.embeddings else 0,
            "sub_tasks": prompt.num_tasks,
            "total_bytes": prompt.nbytes,
        }
    return sizes


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("max |Δ first-step logit| vs PEFT alone, float32, one mixed batch")
        table = {arch: max_logit_differences(arch, folder) for arch in ARCHITECTURES}
        print(f"{'method':<20}" + "".join(f"{arch:>12}" for arch in table))
        for method in METHODS:
            print(f"{method:<20}" + "".join(f"{table[arch][method]:>12.2e}" for arch in table))
        print(
            "\nruntime form sizes, 20 virtual tokens, SmolLM2-135M shape (30 layers, 3 kv heads × 64, hidden 576), fp32"
        )
        for method, size in form_sizes(folder).items():
            print(f"{method:<20} {size}")


if __name__ == "__main__":
    main()
