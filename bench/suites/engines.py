"""10. Base-model throughput against transformers' own engines, on identical requests.

The same requests (inputs and output lengths drawn from the profile, greedy, EOS ignored) served by:
- promptswap: all of them submitted at once, continuously batched;
- transformers' static `generate` on one left-padded batch, run for the longest output (a static
  batch cannot end its rows one by one; the useful tokens are what the requests asked for);
- transformers' `generate_batch` engine (continuous batching over a paged cache), each request with
  its own `max_new_tokens`; its warm-up is not timed.
Both transformers sides run on their own copy of the model with SDPA attention. Each is measured
with torch's default threads and with one thread, alternated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from bench.context import Context
from bench.measure import Spread, Target, alternate, ratios, timed
from bench.results import SuiteResult
from bench.workload import Shape, shapes

GOAL = 1.5  # promptswap over the better of transformers' two engines


@torch.inference_mode()
def static_generate(model: Any, requests: list[Shape], device: torch.device) -> None:
    width = max(len(shape.input_ids) for shape in requests)
    ids = torch.zeros(len(requests), width, dtype=torch.long)  # [B, T] left-padded
    mask = torch.zeros(len(requests), width, dtype=torch.long)
    for row, shape in enumerate(requests):
        ids[row, width - len(shape.input_ids) :] = torch.tensor(shape.input_ids)
        mask[row, width - len(shape.input_ids) :] = 1
    longest = max(shape.new_tokens for shape in requests)
    out = model.generate(
        input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=longest, min_new_tokens=longest,
        do_sample=False, pad_token_id=0,
    )  # fmt: skip
    assert out.shape[1] == width + longest


def generate_batch(model: Any, requests: list[Shape]) -> Callable[[], float]:
    """transformers' continuous-batching engine, warmed up; the returned call times serving `requests`."""

    def serve() -> float:
        config = GenerationConfig(do_sample=False, max_new_tokens=max(s.new_tokens for s in requests),
                                  eos_token_id=-1, pad_token_id=0)  # fmt: skip
        manager = model.init_continuous_batching(generation_config=config)
        manager.warmup()
        manager.start()
        try:

            def work() -> None:
                ids = [manager.add_request(list(s.input_ids), max_new_tokens=s.new_tokens, eos_token_id=-1)
                       for s in requests]  # fmt: skip
                finished: dict[str, int] = {}
                while len(finished) < len(ids):
                    result = manager.get_result(timeout=1)
                    if result is not None and result.is_finished():
                        finished[result.request_id] = len(result.generated_tokens)
                assert [finished[i] for i in ids] == [s.new_tokens for s in requests]

            return timed(work, torch.device("cpu"))
        finally:
            manager.stop(block=True)

    return serve


def run(ctx: Context) -> SuiteResult:
    p = ctx.profile
    requests = shapes(p.engines_requests, p.engines_inputs, p.engines_outputs, ctx.engine.base.spec.vocab_size, 10)
    ours = [shape.request(None) for shape in requests]
    tokens = sum(shape.new_tokens for shape in requests)
    # `Any`: transformers types its generation mixins loosely (`generate` reads as a tensor to mypy).
    theirs: Any = AutoModelForCausalLM.from_pretrained(
        ctx.model_dir, dtype=ctx.engine.base.dtype, attn_implementation="sdpa"
    )
    theirs.to(ctx.device).eval()
    runs: dict[str, Callable[[], float]] = {
        "promptswap": lambda: timed(lambda: ctx.engine.generate(ours), ctx.device),
        "transformers_generate": lambda: timed(lambda: static_generate(theirs, requests, ctx.device), ctx.device),
        "transformers_generate_batch": generate_batch(theirs, requests),
    }
    data: dict[str, object] = {"requests": len(requests), "new_tokens": tokens,
                               "input_tokens": sum(len(s.input_ids) for s in requests)}  # fmt: skip
    targets = []
    before = torch.get_num_threads()
    for label, threads in ctx.thread_settings().items():
        torch.set_num_threads(threads)
        ctx.engine.generate(ours[:2])  # warm-up
        seconds = alternate(runs, p.repeats)
        best = min(("transformers_generate", "transformers_generate_batch"), key=lambda n: sorted(seconds[n])[0])
        speedup = ratios(seconds[best], seconds["promptswap"])
        data[label] = {
            "threads": threads, "seconds": seconds, "better_transformers_engine": best, "speedup": speedup,
            "tokens_per_s": {name: Spread.of([tokens / s for s in times]) for name, times in seconds.items()},
        }  # fmt: skip
        print(f"  engines, {label}: promptswap / {best} {speedup.median:.2f}", flush=True)
        targets.append(Target(f"promptswap / better transformers engine, {label}", speedup, GOAL))
    torch.set_num_threads(before)
    return SuiteResult("engines", data, targets)
