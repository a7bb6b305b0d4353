"""11. Rows that fit a fixed KV budget when they all share one task with a 128-token prefix.

promptswap: the scheduler admits rows while each gets its own run of slots (its input and every
token it may generate) in a pool of the budget less the one prefix, which every row reads from the
prompt cache. This is the engine's own admission (`Scheduler.schedule`), on the profile's requests.

Before (the padded layout this engine replaced, DESIGN.md §3): a batch of B rows held per layer a cache
[B, H_kv, P + T + M, head_dim], P the prefix, T the longest input and M the longest output among them,
every row carrying its own copy of the prefix and padded to the longest. Its rows that fit are the
largest B whose cache is within the budget. Both sides use the same requests in the same order.
"""

from __future__ import annotations

from bench.context import Context
from bench.measure import Spread, Target
from bench.results import SuiteResult
from server.engine.kv_pool import kv_bytes_per_token
from server.engine.scheduler import Scheduler, SchedulerConfig, Ticket

GOAL = 2.0


def run(ctx: Context) -> SuiteResult:
    p = ctx.profile
    spec, dtype = ctx.engine.base.spec, ctx.engine.base.dtype
    per_token = kv_bytes_per_token(spec, dtype)
    budget = p.capacity_budget_mb << 20
    prefix_bytes = p.capacity_prefix * per_token
    requests = ctx.shapes(4 * budget // (per_token * 16), seed=11)  # more than can ever fit

    config = SchedulerConfig(max_batch_size=len(requests), max_prefill_tokens=1 << 40, max_waiting=len(requests))
    scheduler = Scheduler(config, (budget - prefix_bytes) // per_token)
    for index, shape in enumerate(requests):
        scheduler.add(Ticket(index, len(shape.input_ids), len(shape.input_ids) + shape.new_tokens))
    ours = len(scheduler.schedule().admitted)

    before = 0
    while before < len(requests):
        rows = requests[: before + 1]
        width = p.capacity_prefix + max(len(s.input_ids) for s in rows) + max(s.new_tokens for s in rows)
        if len(rows) * width * per_token > budget:
            break
        before += 1
    ratio = ours / before
    data = {
        "budget_bytes": budget, "prefix_tokens": p.capacity_prefix, "bytes_per_position": per_token,
        "rows_promptswap": ours, "rows_padded_layout": before, "ratio": ratio,
        "bytes_per_row_promptswap": (budget - prefix_bytes) / ours,
    }  # fmt: skip
    value = Spread(ratio, ratio, ratio, (ratio,))
    name = f"rows in a KV budget with one {p.capacity_prefix}-token prefix / before"
    return SuiteResult("kv_capacity", data, [Target(name, value, GOAL)])
