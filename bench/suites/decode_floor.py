"""9. A decode step against its floor: what the model's arithmetic alone costs at the same size.

The floor of one decode step over R rows of C positions each is the model's nn.Linear layers on
[R, in_features] (the lm_head included) plus, per layer, one grouped-query
`scaled_dot_product_attention` over the rows' keys and values [R, H_kv, C, head_dim]. promptswap's
side is one whole `EngineCore.step()` (forward, sampling, bookkeeping) over R rows decoding at
context C. The rows' caches are filled with random keys and values instead of a prefill: a decode
step's cost does not depend on what the keys are, and a 64 × 400 prefill would cost minutes here.

Rows admitted together with equal lengths sit equally spaced in the pool and are read by one strided
call per layer. The largest point is measured a second time with ragged rows (contexts spread over
16 values, so each row is read on its own) against the floor at their mean context: the cost of
rows of any lengths. Each point is measured with torch's default threads and with one thread, the two
sides alternated.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.context import Context
from bench.measure import Spread, Target, ratios, synchronize
from bench.plots import plot_curves
from bench.results import SuiteResult
from server.engine.core import EngineCore
from server.engine.engine import Engine
from server.engine.request import Request
from server.engine.sampling import SamplingParams
from server.engine.scheduler import SchedulerConfig

GOAL = 1.3  # at the largest point
STEPS = 3  # decode steps per sample (the median counts)


def contexts(rows: int, context: int, ragged: bool) -> list[int]:
    """Each row's cached positions: all `context`, or (ragged) spread over context - 15 .. context so that
    no two neighbours are alike and every row is read on its own (their mean is context - 7.5)."""
    return [context - (i % 16 if ragged else 0) for i in range(rows)]


def decoding_core(engine: Engine, lengths: list[int], device: torch.device) -> EngineCore:
    """A core whose rows have `lengths` positions cached and decode at the next step."""
    slots = sum(n + 64 for n in lengths)
    config = SchedulerConfig(len(lengths), sum(lengths), kv_cache_bytes=slots * engine.runner.kv_bytes_per_token)
    core = engine.core(config)
    params = SamplingParams(max_new_tokens=32, stop_at_eos=False)
    for length in lengths:
        core.add(Request(list(range(3, 3 + length)), params=params))
    plan = core.scheduler.schedule()
    for running in plan.admitted:
        running.prefilled = running.ticket.prefill_tokens
        sequence = core.sequences[running.ticket.id]
        sequence.segment, sequence.cached, sequence.token_ids = running.segment, len(sequence.own_ids), [5]
    generator = torch.Generator(device="cpu").manual_seed(0)
    for storage in (*core.cache.keys, *core.cache.values):
        storage.copy_(torch.randn(storage.shape, generator=generator).to(storage.dtype))
    synchronize(device)
    return core


def floor(engine: Engine, rows: int, context: int) -> Callable[[], float]:
    """Seconds of the model's linear layers and one GQA attention per layer at this size."""
    model, spec, device, dtype = engine.base.model, engine.base.spec, engine.base.device, engine.base.dtype
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {m.in_features: torch.randn(rows, m.in_features, device=device, dtype=dtype) for m in linears}
    shape = (rows, spec.num_key_value_heads, context, spec.head_dim)
    keys = [torch.randn(shape, device=device, dtype=dtype) for _ in range(spec.num_layers)]
    values = [torch.randn(shape, device=device, dtype=dtype) for _ in range(spec.num_layers)]
    query = torch.randn(rows, spec.num_attention_heads, 1, spec.head_dim, device=device, dtype=dtype)

    @torch.inference_mode()
    def run() -> float:
        synchronize(device)
        start = time.perf_counter()
        for linear in linears:
            F.linear(inputs[linear.in_features], linear.weight, linear.bias)
        for layer in range(spec.num_layers):
            F.scaled_dot_product_attention(query, keys[layer], values[layer], enable_gqa=True)
        synchronize(device)
        return time.perf_counter() - start

    return run


def step_seconds(core: EngineCore, device: torch.device) -> float:
    """The median of STEPS decode steps of `core`."""
    times = []
    for _ in range(STEPS):
        synchronize(device)
        start = time.perf_counter()
        core.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(ctx: Context, rows: int, context: int, ragged: bool = False) -> dict[str, list[float]]:
    engine, device = ctx.engine, ctx.device
    lengths = contexts(rows, context, ragged)
    lower = floor(engine, rows, round(sum(lengths) / rows))
    lower()  # warm-up
    seconds: dict[str, list[float]] = {"promptswap": [], "floor": []}
    for repeat in range(ctx.profile.repeats + 1):
        sides: list[tuple[str, Callable[[], float]]] = [
            ("promptswap", lambda: step_seconds(decoding_core(engine, lengths, device), device)),
            ("floor", lambda: sorted(lower() for _ in range(STEPS))[STEPS // 2]),
        ]
        for name, run in sides if repeat % 2 == 0 else sides[::-1]:
            seconds[name].append(run())
    return seconds


def run(ctx: Context) -> SuiteResult:
    grid = ctx.profile.floor_grid
    data: dict[str, dict[str, object]] = {}
    panels: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
    targets = []
    before = torch.get_num_threads()
    for label, threads in ctx.thread_settings().items():
        torch.set_num_threads(threads)
        points: dict[str, dict[str, object]] = {}
        curve = []
        for rows, context in grid:
            seconds = measure(ctx, rows, context)
            ratio = ratios(seconds["promptswap"], seconds["floor"])
            points[f"{rows}x{context}"] = {"seconds": seconds, "step_over_floor": ratio,
                                           "step_ms": Spread.of([1e3 * s for s in seconds["promptswap"]]),
                                           "floor_ms": Spread.of([1e3 * s for s in seconds["floor"]])}  # fmt: skip
            curve.append((rows * context, ratio.median, ratio.low, ratio.high))
            print(f"  decode_floor, {label}: {rows}x{context} step/floor {ratio.median:.2f}", flush=True)
        rows, context = grid[-1]
        seconds = measure(ctx, rows, context, ragged=True)
        ragged = ratios(seconds["promptswap"], seconds["floor"])
        print(f"  decode_floor, {label}: {rows}x{context} ragged, step/floor {ragged.median:.2f}", flush=True)
        data[label] = {"threads": threads, "points": points, f"{rows}x{context}_ragged_step_over_floor": ragged}
        panels[f"decode step / floor, {label} ({threads})"] = {"rows × context": sorted(curve)}
        targets.append(Target(f"decode step / floor at {grid[-1][0]}x{grid[-1][1]}, {label}", ratio, GOAL,
                              higher_is_better=False))  # fmt: skip
    torch.set_num_threads(before)
    plot = plot_curves(ctx.out, "decode_floor", panels, ylabel="step / floor")
    return SuiteResult("decode_floor", data, targets, plots=[plot.name])
