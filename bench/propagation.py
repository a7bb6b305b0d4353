"""Propagation delay between replicas: upload on replica A, first request served by replica B with it.

    python -m bench.propagation [--repeats 20] [--virtual-tokens 20]

Starts a redis-server on a free port and two `promptswap serve` processes on it (a Llama with
SmolLM2-135M's shapes and random weights, fp32, CPU), then uploads `--repeats` new versions of one
task through A. After each 201 from A, a client asks B for the task back to back (one new token)
until B answers with the new version: that answer's arrival minus the 201's is the delay. It
covers the change event reaching B, B loading the version from Redis and building its runtime
form on first use, and one request. B's warm request time is printed beside it for scale.
Writes bench/results/propagation.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.config import SMOLLM
from bench.models import random_llama
from tests.factories import make_artifact, make_tokenizer
from tests.live_server import live_server
from tests.redis_server import redis_server

RESULTS = Path(__file__).parent / "results"
FILES = ("adapter_config.json", "adapter_model.safetensors")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(fraction * len(ordered)) - 1)]


def served_version(client: httpx.Client, url: str, task: str) -> int | None:
    body = {"task": task, "inputs": "The film was", "parameters": {"max_new_tokens": 1}}
    response = client.post(f"{url}/v1/generate", json=body)
    return response.json()["version"] if response.status_code == 200 else None


def measure(folder: Path, repeats: int, virtual_tokens: int) -> dict[str, float | int]:
    base = random_llama(SMOLLM)  # SmolLM2-135M's shapes, random weights
    model_dir = folder / "model"
    base.save_pretrained(model_dir)
    make_tokenizer(model_dir)
    artifacts = [make_artifact(base, "prompt_tuning", virtual_tokens, folder / f"a{i}", seed=i) for i in range(2)]
    uploads = [{name: (name, (a / name).read_bytes()) for name in FILES} for a in artifacts]
    del base

    with ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        args = ("--model", str(model_dir), "--store", redis.url)
        a = stack.enter_context(live_server(*args, log_dir=folder, timeout=300))
        b = stack.enter_context(live_server(*args, log_dir=folder, timeout=300))
        client = stack.enter_context(httpx.Client(timeout=120))
        for url in (a.url, b.url):  # the first pass of each process is slow for reasons of its own
            client.post(f"{url}/v1/generate", json={"inputs": "warm up", "parameters": {"max_new_tokens": 1}})
        delays_ms, polls, warm_ms = [], [], []
        for i in range(repeats):
            response = client.post(f"{a.url}/v1/prompts/propagated", files=uploads[i % 2])
            acknowledged = time.perf_counter()
            version = response.json()["version"]
            count = 1
            while served_version(client, b.url, "propagated") != version:
                count += 1
            delays_ms.append((time.perf_counter() - acknowledged) * 1e3)
            polls.append(count)
            start = time.perf_counter()
            served_version(client, b.url, "propagated")
            warm_ms.append((time.perf_counter() - start) * 1e3)
    return {
        "repeats": repeats,
        "virtual_tokens": virtual_tokens,
        "delay_p50_ms": statistics.median(delays_ms),
        "delay_p95_ms": percentile(delays_ms, 0.95),
        "delay_max_ms": max(delays_ms),
        "requests_to_b_p50": statistics.median(polls),
        "warm_request_p50_ms": statistics.median(warm_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--virtual-tokens", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = measure(Path(folder), args.repeats, args.virtual_tokens)
    print(
        f"upload on A -> first answer from B with the new version, {result['repeats']} uploads of "
        f"{result['virtual_tokens']}-token prompt tuning (SmolLM2-135M shapes, fp32, CPU):\n"
        f"  p50 {result['delay_p50_ms']:.1f} ms  p95 {result['delay_p95_ms']:.1f} ms  "
        f"max {result['delay_max_ms']:.1f} ms  (B asked {result['requests_to_b_p50']:.0f} times at p50; "
        f"a warm request to B takes {result['warm_request_p50_ms']:.1f} ms)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "propagation.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
