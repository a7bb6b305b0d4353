"""Continuous vs static batching on the same requests (no target: it shows what continuous batching buys).

Runs on the random Llama of the profile's sweep size (SmolLM2-135M's shape in --full): a
scheduling property, so random weights do; EOS is ignored anyway.

Static: requests in arrival order are cut into batches; each batch runs until its last row
finishes (finished rows leave, nobody joins). Continuous: the same requests queue at once and
join the running batch (at most the same number of rows) as soon as a row finishes.
"""

from __future__ import annotations

from bench.context import Context
from bench.measure import Spread, alternate, ratios, timed
from bench.results import SuiteResult
from server.engine.engine import Engine, Request
from server.engine.scheduler import SchedulerConfig


def run_static(engine: Engine, requests: list[Request], batch: int) -> None:
    for start in range(0, len(requests), batch):
        engine.generate(requests[start : start + batch])


def run_continuous(engine: Engine, requests: list[Request], batch: int) -> None:
    core = engine.core(SchedulerConfig(max_batch_size=batch, max_waiting=len(requests)))
    for request in requests:
        core.add(request)
    while core.has_work:
        core.step()


def run(ctx: Context) -> SuiteResult:
    p = ctx.profile
    engine = ctx.sweep_engine()
    # Output lengths vary widely here on purpose: that is where static batches wait for their longest row.
    requests = [
        s.request(None)
        for s in ctx.shapes(
            p.continuous_requests, seed=8, output_tokens=(p.output_tokens[0], 4 * p.output_tokens[1]), engine=engine
        )
    ]
    tokens = sum(r.params.max_new_tokens for r in requests)
    size = p.continuous_batch
    seconds = alternate(
        {
            "static": lambda: timed(lambda: run_static(engine, requests, size), ctx.device),
            "continuous": lambda: timed(lambda: run_continuous(engine, requests, size), ctx.device),
        },
        p.repeats,
    )
    data = {
        "requests": len(requests), "batch": size, "new_tokens": tokens, "seconds": seconds,
        "tokens_per_s": {name: Spread.of([tokens / s for s in times]) for name, times in seconds.items()},
        "continuous_over_static": ratios(seconds["static"], seconds["continuous"]),
    }  # fmt: skip
    return SuiteResult("continuous", data)
