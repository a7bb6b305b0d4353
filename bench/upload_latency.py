"""Time from upload start to servable, for 20-token prompt tuning and prefix tuning on a 135M Llama.

    python -m bench.upload_latency [--repeats 10]

`PromptRegistry.upload` validates the artifact, builds its runtime form on the device and
commits it to a directory store; when it returns, the next request is served from the device
cache. Prints median and p95 per method, the first request after each upload against a warm
one, and the bytes each task keeps on the device.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.exactness import smollm_shaped_llama
from prompt_store.file_store import FileStore
from server.engine.engine import Engine, Request
from server.engine.model import wrap_model
from server.engine.sampling import SamplingParams
from server.prompts.registry import PromptRegistry
from tests.factories import make_artifact


async def measure(folder: Path, repeats: int) -> None:
    base = smollm_shaped_llama()
    engine = Engine(wrap_model(base, torch.device("cpu")))
    registry = PromptRegistry(FileStore(folder / "store"), engine.base.spec, engine.build_prompt, 1 << 32)
    request_ids = list(range(100, 132))
    print(f"model: Llama, SmolLM2-135M shapes, fp32, {torch.get_num_threads()} CPU threads; {repeats} uploads each")
    for method in ("prompt_tuning", "prefix"):
        artifact = make_artifact(base, method, 20, folder / method, seed=0)
        config = (artifact / "adapter_config.json").read_bytes()
        weights = (artifact / "adapter_model.safetensors").read_bytes()
        upload_ms, first_ms, warm_ms = [], [], []
        for i in range(repeats):
            task = f"{method}-{i}"
            start = time.perf_counter()
            await registry.upload(task, config, weights)
            upload_ms.append((time.perf_counter() - start) * 1e3)
            for timings in (first_ms, warm_ms):
                start = time.perf_counter()
                lease = await registry.acquire(task)
                engine.generate([Request(request_ids, prompt=lease.prompt, params=SamplingParams(max_new_tokens=1))])
                registry.release(lease)
                timings.append((time.perf_counter() - start) * 1e3)
        lease = await registry.acquire(f"{method}-0")
        nbytes = lease.prompt.nbytes
        registry.release(lease)
        p95 = sorted(upload_ms)[max(0, round(0.95 * len(upload_ms)) - 1)]
        print(
            f"{method:<14} upload-to-servable median {statistics.median(upload_ms):6.1f} ms  p95 {p95:6.1f} ms | "
            f"first request {statistics.median(first_ms):6.1f} ms vs warm {statistics.median(warm_ms):6.1f} ms | "
            f"device bytes per task {nbytes:,}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(Path(folder), args.repeats))


if __name__ == "__main__":
    main()
