"""12. Structured output and log-probabilities: what they cost a batch.

- Half the rows JSON-schema constrained against none, on the same requests (base model, the profile's
  lengths, EOS ignored by the unconstrained rows): throughput in generated tokens per second, since a
  constrained row may end as soon as its JSON is complete. Goal: >= 0.9.
- Every row reporting its log-probabilities with the top 5 against none: throughput. Goal: >= 0.95.
- Grammar compile time for 60 generated schemas (the test suite's generator), each compiled once on a
  fresh cache after the tokenizer's one-time set-up: p50 and p95.
Sides alternate, the order rotating each repeat.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import replace

from bench.context import Context
from bench.measure import Spread, Target, alternate, ratios, timed
from bench.results import SuiteResult
from server.engine.constraints import Constraint, Grammars
from server.engine.request import Request
from tests.engine.test_structured import random_schema

CONSTRAINED_GOAL = 0.9
LOGPROBS_GOAL = 0.95
SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "maxLength": 400},
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 20},
    },
    "required": ["summary", "sentiment", "tags"],
}


def run(ctx: Context) -> SuiteResult:
    engine = ctx.engine
    plain = [shape.request(None) for shape in ctx.shapes(ctx.profile.structured_requests, seed=12)]
    constraint = Constraint.json_schema(SCHEMA)
    half = [with_params(r, constraint=constraint) if i % 2 else r for i, r in enumerate(plain)]
    logprobs = [with_params(r, logprobs=5) for r in plain]
    generated: dict[str, int] = {}

    def side(name: str, requests: list[Request]) -> float:
        def work() -> None:
            generated[name] = sum(len(g.token_ids) for g in engine.generate(requests))

        return timed(work, ctx.device)

    side("plain", plain[:2])  # warm-up, and the grammar compiled before any clock starts
    side("half constrained", half[:2])
    seconds = alternate(
        {"plain": lambda: side("plain", plain), "half constrained": lambda: side("half constrained", half),
         "logprobs": lambda: side("logprobs", logprobs)},
        ctx.profile.repeats,
    )  # fmt: skip
    rates = {name: [generated[name] / s for s in times] for name, times in seconds.items()}
    constrained = ratios(rates["half constrained"], rates["plain"])
    reported = ratios(rates["logprobs"], rates["plain"])
    compile_ms = compile_times(ctx)
    data = {
        "requests": len(plain), "generated_tokens": generated, "seconds": seconds,
        "tokens_per_s": {name: Spread.of(values) for name, values in rates.items()},
        "half_constrained_over_plain": constrained, "logprobs_over_plain": reported,
        "compile_ms": {"p50": statistics.median(compile_ms), "p95": percentile(compile_ms, 0.95),
                       "schemas": len(compile_ms)},
    }  # fmt: skip
    targets = [
        Target("half the rows JSON-constrained / none: throughput", constrained, CONSTRAINED_GOAL),
        Target("logprobs with top 5 / none: throughput", reported, LOGPROBS_GOAL),
    ]
    return SuiteResult("structured", data, targets)


def with_params(request: Request, **changes: object) -> Request:
    return replace(request, params=replace(request.params, **changes))  # type: ignore[arg-type]


def compile_times(ctx: Context) -> list[float]:
    """Milliseconds to compile each of 60 generated schemas, on a fresh cache."""
    spec = ctx.engine.base.spec
    grammars = Grammars(ctx.tokenizer, spec.vocab_size, ctx.engine.base.eos_token_ids)
    grammars.check(Constraint.regex("warm"))  # the tokenizer's one-time set-up
    rng = random.Random(17)
    times = []
    for _ in range(60):
        constraint = Constraint.json_schema(random_schema(rng))
        start = time.perf_counter()
        grammars.check(constraint)
        times.append(1e3 * (time.perf_counter() - start))
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
