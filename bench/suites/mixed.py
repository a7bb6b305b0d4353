"""1. Mixed vs single: the same requests as mixed-task batches, then grouped so each batch has one task.

B tasks × B requests, laid out as a Latin square: request (task t, j) has input/output shape j.
Single-task batch t holds (t, 0..B-1); mixed batch k holds (t, (t + k) mod B) for every t. Both
sides therefore run the same requests in batches of the same shapes; only the mixing differs.
Batch pairs are timed alternately, so drift hits both sides alike.
"""

from __future__ import annotations

from bench.context import Context
from bench.measure import Spread, Target, ratios, timed
from bench.results import SuiteResult
from bench.workload import tokens_of
from server.engine.engine import Request

GOAL = 0.98


def run(ctx: Context) -> SuiteResult:
    size = ctx.profile.mixed_batch
    prompts = ctx.prompts("prompt_tuning", size)
    shapes = ctx.shapes(size, seed=1)
    single = [[shapes[j].request(prompts[t]) for j in range(size)] for t in range(size)]
    mixed = [[shapes[(t + k) % size].request(prompts[t]) for t in range(size)] for k in range(size)]
    tokens = sum(tokens_of(batch) for batch in single)

    def run_batch(batch: list[Request]) -> float:
        return timed(lambda: ctx.engine.generate(batch), ctx.device)

    run_batch(mixed[0])  # warm-up
    seconds: dict[str, list[float]] = {"mixed": [], "single": []}
    for repeat in range(ctx.profile.repeats):
        totals = {"mixed": 0.0, "single": 0.0}
        for k in range(size):
            pair = [("mixed", mixed[k]), ("single", single[k])]
            for name, batch in pair if (repeat + k) % 2 == 0 else pair[::-1]:
                totals[name] += run_batch(batch)
        for name, total in totals.items():
            seconds[name].append(total)
    ratio = ratios(seconds["single"], seconds["mixed"])  # throughput mixed / single
    data = {
        "tasks": size, "batch_size": size, "requests": size * size, "new_tokens": tokens,
        "seconds": seconds, "mixed_tokens_per_s": Spread.of([tokens / s for s in seconds["mixed"]]),
        "single_tokens_per_s": Spread.of([tokens / s for s in seconds["single"]]), "ratio": ratio,
    }  # fmt: skip
    return SuiteResult("mixed_vs_single", data, [Target("mixed / single-task throughput", ratio, GOAL)])
