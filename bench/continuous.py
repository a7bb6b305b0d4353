"""Continuous batching vs static batches on the same requests, measured side by side.

    python -m bench.continuous [--requests 32] [--batch 8] [--repeats 2]

A Llama with SmolLM2-135M's shapes (random weights) serves requests with inputs of 32-128
tokens and outputs of 16-128 tokens. Static: requests in arrival order are cut into batches of
`--batch`; each batch runs until its last row finishes (finished rows leave, nobody joins).
Continuous: the same requests queue at once and join the running batch (at most `--batch`
rows) as soon as a row finishes. Reports generated tokens per second of each, alternating the
two runs, and their ratio. Writes bench/results/continuous.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from bench.exactness import smollm_shaped_llama
from server.engine.core import EngineCore
from server.engine.engine import Engine, Request
from server.engine.model import wrap_model
from server.engine.sampling import SamplingParams
from server.engine.scheduler import SchedulerConfig


def workload(count: int, seed: int = 0) -> list[Request]:
    rng = random.Random(seed)
    return [
        Request(
            [rng.randrange(3, 49152) for _ in range(rng.randint(32, 128))],
            params=SamplingParams(max_new_tokens=rng.randint(16, 128), stop_at_eos=False),
        )
        for _ in range(count)
    ]


def run_static(engine: Engine, requests: list[Request], batch: int) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(requests), batch):
        tokens += sum(len(g.token_ids) for g in engine.generate(requests[i : i + batch]))
    return tokens, time.perf_counter() - start


def run_continuous(engine: Engine, requests: list[Request], batch: int) -> tuple[int, float]:
    start = time.perf_counter()
    core = EngineCore(engine, SchedulerConfig(max_batch_size=batch, max_waiting=len(requests)))
    for request in requests:
        core.add(request)
    tokens = 0
    while core.has_work:
        tokens += sum(1 for event in core.step() if event.token_id is not None)
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    engine = Engine(wrap_model(smollm_shaped_llama(), torch.device("cpu")))
    requests = workload(args.requests)
    total_new = sum(r.params.max_new_tokens for r in requests)
    print(f"{args.requests} requests, {total_new} new tokens, batch {args.batch}, {torch.get_num_threads()} threads")
    rates: dict[str, list[float]] = {"static": [], "continuous": []}
    for repeat in range(args.repeats):
        for name, run in (("static", run_static), ("continuous", run_continuous)):
            tokens, seconds = run(engine, requests, args.batch)
            assert tokens == total_new
            rates[name].append(tokens / seconds)
            print(f"  run {repeat + 1} {name:<10} {seconds:6.1f} s  {tokens / seconds:6.1f} tokens/s")
    ratios = [c / s for c, s in zip(rates["continuous"], rates["static"], strict=True)]
    result = {
        "requests": args.requests, "batch": args.batch, "new_tokens": total_new,
        "static_tokens_per_s": rates["static"], "continuous_tokens_per_s": rates["continuous"],
        "ratio_median": statistics.median(ratios), "ratios": ratios,
    }  # fmt: skip
    print(f"continuous / static throughput: median {result['ratio_median']:.2f}  (runs: {ratios})")
    out = Path(__file__).parent / "results" / "continuous.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
