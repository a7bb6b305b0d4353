"""2. promptswap vs what a PEFT user does today, on the same prompt-tuning workload.

PEFT: one `PeftModel` holding every task's adapter; per task `set_adapter`, then `generate` on
that task's requests in batches (left-padded, greedy), trying each batch size in the profile and
counting the fastest. promptswap: every request in one continuously batched run. Same model,
dtype, device, requests and output lengths: each task draws one output length, its requests
all use it, and both sides generate exactly that many tokens (PEFT via min_new_tokens, promptswap
by ignoring EOS).
"""

from __future__ import annotations

import copy
import random
import warnings
from collections.abc import Callable
from typing import Any

import torch
from peft import PeftModel

from bench.context import Context
from bench.measure import Spread, Target, alternate, ratios, timed
from bench.results import SuiteResult
from bench.workload import Shape
from server.engine.engine import Request

# tasks x requests per task -> goal. The KV issue's goals hold at the full profile's realistic lengths;
# the quick profile's 6-10 new tokens leave PEFT's per-request overheads less to lose, so it keeps the
# goals it had before.
GOALS = {"full": {"16x4": 8.0, "64x1": 10.0}}
DEFAULT_GOALS = {"16x4": 3.0, "64x1": 5.0}
GPU_GOAL = 10.0


def peft_model(ctx: Context, count: int) -> PeftModel:
    files = ctx.artifacts("prompt_tuning", count)
    model = PeftModel.from_pretrained(copy.deepcopy(ctx.model), files[0].folder, adapter_name="task-0")
    for index, artifact in enumerate(files[1:], start=1):
        model.load_adapter(artifact.folder, adapter_name=f"task-{index}")
    return model.eval()


@torch.inference_mode()
def peft_generate(model: PeftModel, groups: list[list[Shape]], batch_size: int, device: torch.device) -> None:
    """Per task: switch adapter, generate its requests `batch_size` at a time."""
    for task, group in enumerate(groups):
        model.set_adapter(f"task-{task}")
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            width = max(len(shape.input_ids) for shape in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)  # [b, T] left-padded
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, shape in enumerate(chunk):
                ids[row, width - len(shape.input_ids) :] = torch.tensor(shape.input_ids)
                mask[row, width - len(shape.input_ids) :] = 1
            new = chunk[0].new_tokens  # one output length per task
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new, min_new_tokens=new,
                do_sample=False, pad_token_id=0,
            )  # fmt: skip
            assert out.shape[1] == width + new


def workload(ctx: Context, tasks: int, per_task: int) -> list[list[Shape]]:
    rng = random.Random(tasks)
    groups = []
    for task in range(tasks):
        new_tokens = rng.randint(*ctx.profile.output_tokens)
        groups.append(ctx.shapes(per_task, seed=1000 * tasks + task, output_tokens=(new_tokens, new_tokens)))
    return groups


def compare(ctx: Context, model: PeftModel, tasks: int, per_task: int) -> tuple[dict[str, Any], Spread]:
    """Alternate promptswap and PEFT (each batch size) on one workload; the speedup counts PEFT's best."""
    groups = workload(ctx, tasks, per_task)
    prompts = ctx.prompts("prompt_tuning", tasks)
    requests: list[Request] = [shape.request(prompts[t]) for t, group in enumerate(groups) for shape in group]
    sizes = sorted({min(size, per_task) for size in ctx.profile.peft_batch_sizes})

    def peft_run(size: int) -> Callable[[], float]:
        return lambda: timed(lambda: peft_generate(model, groups, size, ctx.device), ctx.device)

    runs = {"promptswap": lambda: timed(lambda: ctx.engine.generate(requests), ctx.device)}
    runs.update({f"peft_batch_{size}": peft_run(size) for size in sizes})
    peft_generate(model, groups[:1], sizes[-1], ctx.device)  # warm-up
    seconds = alternate(runs, ctx.profile.repeats)
    best = min(sizes, key=lambda size: Spread.of(seconds[f"peft_batch_{size}"]).median)
    speedup = ratios(seconds[f"peft_batch_{best}"], seconds["promptswap"])
    tokens = sum(shape.new_tokens for group in groups for shape in group)
    data = {
        "tasks": tasks, "requests_per_task": per_task, "new_tokens": tokens, "peft_best_batch_size": best,
        "seconds": seconds, "speedup": speedup,
        "tokens_per_s": {run: Spread.of([tokens / s for s in times]) for run, times in seconds.items()},
    }  # fmt: skip
    return data, speedup


def run(ctx: Context) -> SuiteResult:
    largest = max(tasks for tasks, _ in ctx.profile.peft_workloads)
    model = peft_model(ctx, largest)
    warnings.filterwarnings("ignore", message="Position ids are not supported")
    data, targets = {}, []
    for tasks, per_task in ctx.profile.peft_workloads:
        name = f"{tasks}x{per_task}"
        data[name], speedup = compare(ctx, model, tasks, per_task)
        goals = GOALS.get(ctx.profile.name, DEFAULT_GOALS)
        goal = goals.get(name, GPU_GOAL) if ctx.device.type == "cpu" else GPU_GOAL
        targets.append(Target(f"{name}: promptswap / PEFT throughput", speedup, goal))
    return SuiteResult("vs_peft", data, targets)
