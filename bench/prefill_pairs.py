"""Time to first token with a prompt's precomputed KV vs the base model, in more side-by-side pairs than a run has.

    python -m bench.prefill_pairs --profile full --pairs 8

The prompt-cost suite's two prefills (the same rows and 20-token prompts as `python -m bench --<profile>`),
alternated `--pairs` times, each pair giving one ratio; prints every time, every ratio and the median.
Used where a run's two pairs leave a TTFT ratio inside this machine's noise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from bench.config import PROFILES, TINY
from bench.context import Context
from bench.models import load, model_dir
from bench.suites.prompt_cost import prefill_rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prefill_pairs", description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="full")
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(1)
    profile = PROFILES[args.profile]
    with tempfile.TemporaryDirectory(prefix="promptswap-prefill-") as scratch:
        folder = model_dir(profile.real_model, TINY, Path(scratch))
        model, tokenizer = load(folder, torch.float32)
        ctx = Context(profile, torch.device("cpu"), folder, model, tokenizer, Path(scratch), Path(scratch), 1, 1)
        prompts = ctx.prompts("prompt_tuning", profile.cost_batch)
        shapes = ctx.shapes(profile.cost_batch, seed=3)  # the prompt-cost suite's rows
        sides = dict(zip(("prompt_kv", "base"), prefill_rows(shapes, prompts), strict=True))

        def prefill_seconds(name: str) -> float:
            start = time.perf_counter()
            ctx.engine.next_token_logits(sides[name])
            return time.perf_counter() - start

        prefill_seconds("base")  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for pair in range(args.pairs):
            for name in list(sides)[:: 1 if pair % 2 == 0 else -1]:
                seconds[name].append(prefill_seconds(name))
    ratios = [p / b for p, b in zip(seconds["prompt_kv"], seconds["base"], strict=True)]
    print(f"input lengths: {sorted(len(s.input_ids) for s in shapes)}")
    for name, times in seconds.items():
        print(f"{name:>9} prefill s: {' '.join(f'{t:.3f}' for t in times)}")
    print(f"TTFT ratio per pair: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}")


if __name__ == "__main__":
    main()
