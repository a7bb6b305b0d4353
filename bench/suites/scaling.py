"""7. Scaling curves on a random Llama of the profile's size: generated tokens per second against batch
size, against the number of distinct tasks in one batch, and against prompt length.

The points of a curve are run in rotating order within each repeat, so drift spreads over all
of them; each point reports median and min–max.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.context import Context
from bench.measure import Spread, alternate, timed
from bench.plots import plot_curves
from bench.results import SuiteResult
from server.engine.engine import Engine, Request

Curve = dict[int, Spread]  # x -> tokens per second


def curve(ctx: Context, engine: Engine, batches: dict[int, list[Request]]) -> Curve:
    tokens = {x: sum(r.params.max_new_tokens for r in batch) for x, batch in batches.items()}

    def run_batch(batch: list[Request]) -> Callable[[], float]:
        return lambda: timed(lambda: engine.generate(batch), ctx.device)

    runs = {str(x): run_batch(batch) for x, batch in batches.items()}
    seconds = alternate(runs, ctx.profile.repeats)
    return {x: Spread.of([tokens[x] / s for s in seconds[str(x)]]) for x in batches}


def run(ctx: Context) -> SuiteResult:
    p = ctx.profile
    engine = ctx.sweep_engine()
    model = engine.base.model
    widest = max(max(p.sweep_batches), max(p.sweep_tasks))
    out = (p.sweep_output_tokens, p.sweep_output_tokens)
    shapes = ctx.shapes(widest, seed=7, output_tokens=out, engine=engine)
    prompts = ctx.prompts("prompt_tuning", max(p.sweep_tasks), engine)
    engine.generate([shapes[0].request(prompts[0])])  # warm-up
    by_batch = curve(
        ctx,
        engine,
        {b: [s.request(prompts[i % len(prompts)]) for i, s in enumerate(shapes[:b])] for b in p.sweep_batches},
    )
    rows = max(p.sweep_tasks)
    by_tasks = curve(
        ctx, engine, {k: [s.request(prompts[i % k]) for i, s in enumerate(shapes[:rows])] for k in p.sweep_tasks}
    )
    fixed = shapes[: p.cost_batch]
    by_length = {}
    for n in p.sweep_prompt_lengths:
        length_prompts = ctx.prompts("prompt_tuning", len(fixed), engine, n) if n else [None] * len(fixed)
        by_length[n] = [s.request(prompt) for s, prompt in zip(fixed, length_prompts, strict=True)]
    by_prompt = curve(ctx, engine, by_length)
    curves = {
        "batch_size": by_batch,
        "distinct_tasks": by_tasks,
        "prompt_length": by_prompt,
    }
    panels = {
        f"batch size ({p.num_virtual_tokens}-token prompts, {len(prompts)} tasks)": {"batch size": points(by_batch)},
        f"distinct tasks in a batch of {rows}": {"distinct tasks": points(by_tasks)},
        f"prompt length (batch {len(fixed)})": {"virtual tokens": points(by_prompt)},
    }
    plot = plot_curves(ctx.out, "scaling", panels)
    shape = p.sweep_shape
    data = {
        "model": {"hidden": shape.hidden_size, "layers": shape.num_layers, "vocab": shape.vocab_size,
                  "parameters": sum(t.numel() for t in model.parameters())},
        "new_tokens_per_request": p.sweep_output_tokens, "tokens_per_s": curves,
    }  # fmt: skip
    return SuiteResult("scaling", data, plots=[plot.name])


def points(values: Curve) -> list[tuple[float, float, float, float]]:
    return [(x, s.median, s.low, s.high) for x, s in values.items()]
