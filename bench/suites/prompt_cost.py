"""3. What a 20-token prompt costs: the same requests with a task prompt and on the base model alone.

Throughput is a whole `generate` run; time to first token is the prefill of the batch (every
row's first token comes out of it). A third pair shows what computing each prompt's KV once
saves: prefill against the stored prefix KV vs prefilling the virtual-token embeddings with the
input every request, as PEFT's prompt tuning does.
"""

from __future__ import annotations

import torch

from bench.context import Context
from bench.measure import Spread, Target, alternate, ratios, timed
from bench.results import SuiteResult
from bench.workload import Shape
from server.engine.request import Request
from server.prompts.forms import TaskPrompt

THROUGHPUT_GOAL = 0.95
TTFT_GOAL = 1.05


@torch.inference_mode()
def embeddings_prefill(ctx: Context, rows: list[tuple[tuple[int, ...], TaskPrompt]]) -> None:
    """Prefill [virtual embeddings][input] per row, left-padded, in one pass."""
    model = ctx.engine.base.model
    embed = model.get_input_embeddings()
    device, dtype = ctx.device, ctx.engine.base.dtype
    sequences = []
    for input_ids, prompt in rows:
        assert prompt.embeddings is not None
        virtual = prompt.embeddings[0].embeddings.to(dtype)  # [N, D]
        tokens = embed(torch.tensor(input_ids, device=device))  # [T, D]
        sequences.append(torch.cat([virtual, tokens]))  # [N + T, D]
    width = max(len(s) for s in sequences)
    inputs = torch.zeros(len(rows), width, sequences[0].shape[1], device=device, dtype=dtype)  # [B, S, D]
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)  # [B, S]
    for row, sequence in enumerate(sequences):
        inputs[row, width - len(sequence) :] = sequence
        mask[row, width - len(sequence) :] = 1
    model(inputs_embeds=inputs, attention_mask=mask, logits_to_keep=1)


def prefill_rows(shapes: list[Shape], prompts: list[TaskPrompt]) -> tuple[list[Request], list[Request]]:
    """The same rows twice: each with its task's prompt (served from its prefix KV), and on the base model."""
    with_prompt = [shape.request(prompt) for shape, prompt in zip(shapes, prompts, strict=True)]
    return with_prompt, [shape.request(None) for shape in shapes]


def run(ctx: Context) -> SuiteResult:
    size = ctx.profile.cost_batch
    prompts = ctx.prompts("prompt_tuning", size)
    shapes = ctx.shapes(size, seed=3)
    with_prompt, base_only = prefill_rows(shapes, prompts)
    engine, device = ctx.engine, ctx.device
    runs = {
        "generate_prompt": lambda: timed(lambda: engine.generate(with_prompt), device),
        "generate_base": lambda: timed(lambda: engine.generate(base_only), device),
        "prefill_prompt_kv": lambda: timed(lambda: engine.next_token_logits(with_prompt), device),
        "prefill_base": lambda: timed(lambda: engine.next_token_logits(base_only), device),
        "prefill_embeddings": lambda: timed(
            lambda: embeddings_prefill(ctx, [(s.input_ids, p) for s, p in zip(shapes, prompts, strict=True)]), device
        ),
    }
    runs["prefill_base"]()  # warm-up
    seconds = alternate(runs, ctx.profile.repeats)
    throughput = ratios(seconds["generate_base"], seconds["generate_prompt"])  # tokens/s prompt over base
    ttft = ratios(seconds["prefill_prompt_kv"], seconds["prefill_base"])
    saved = ratios(seconds["prefill_embeddings"], seconds["prefill_prompt_kv"])
    data = {
        "rows": size, "num_virtual_tokens": ctx.profile.num_virtual_tokens, "seconds": seconds,
        "throughput_ratio": throughput, "ttft_ratio": ttft, "embeddings_over_kv_prefill": saved,
        "prefill_ms": {name: Spread.of([1e3 * s for s in seconds[name]]) for name in seconds if "prefill" in name},
    }  # fmt: skip
    targets = [
        Target("throughput with prompt / base model", throughput, THROUGHPUT_GOAL),
        Target("time to first token with prompt / base model", ttft, TTFT_GOAL, higher_is_better=False),
    ]
    return SuiteResult("prompt_cost", data, targets)
