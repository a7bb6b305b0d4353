"""8. Memory: device bytes per task for each prompt method on the served model, and peak memory per run.

Peaks: the live server's resident high-water mark after each server-level suite, this process's
own, and on a GPU the peak allocated device memory of this process.
"""

from __future__ import annotations

import resource

import torch

from bench.context import Context
from bench.results import SuiteResult


def run(ctx: Context) -> SuiteResult:
    per_method = {}
    for method in ctx.profile.methods:
        prompt = ctx.prompts(method, 1)[0]
        per_method[method] = {
            "device_bytes": prompt.nbytes,
            "sub_tasks": prompt.num_tasks,
            "virtual_tokens": prompt.num_virtual_tokens,
            "prefix_kv_bytes_per_sub_task": prompt.prefixes[0].nbytes,
            "embedding_bytes_per_sub_task": prompt.embeddings[0].nbytes if prompt.embeddings else 0,
            "artifact_file_bytes": len(ctx.artifacts(method, 1)[0].weights_bytes),
        }
    peaks = {
        "server_peak_resident_bytes": dict(ctx.server_peaks),
        "bench_process_peak_resident_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if ctx.device.type == "cuda":
        peaks["bench_process_peak_device_bytes"] = torch.cuda.max_memory_allocated(ctx.device)
    spec = ctx.engine.base.spec
    model = {"layers": spec.num_layers, "kv_heads": spec.num_key_value_heads, "head_dim": spec.head_dim,
             "hidden": spec.hidden_size, "dtype": str(ctx.engine.base.dtype).removeprefix("torch.")}  # fmt: skip
    return SuiteResult("memory", {"model": model, "per_task": per_method, "peaks": peaks})
