"""6. Many tasks: `many_tasks` registered, a device cache sized for `many_cached`, Zipf(1.0) popularity,
against the same requests with every task they use already on the device.

The registry, device cache and continuously batched engine are the server's own, driven in
process. The store is filled directly (as after a restart: everything stored, nothing built),
so a cache miss pays what it pays in the server: read, validate, run the model over the prompt.
Before timing, an untimed warm-up draws `many_warmup` tasks from the same Zipf popularity
through the small cache, so the timed repeats start from its steady state (popular tasks
resident, the tail missing) rather than from an empty cache; the cache stays warm across repeats.
The hit, miss and eviction counts reported are those of the timed part only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time

from bench.context import Context
from bench.measure import Spread, Target, ratios
from bench.results import SuiteResult
from bench.workload import zipf_choices
from prompt_store.artifact import parse_artifact
from prompt_store.file_store import FileStore
from prompt_store.records import VersionRecord
from server.engine.async_engine import AsyncEngine
from server.engine.engine import Request
from server.engine.scheduler import SchedulerConfig
from server.prompts.registry import PromptRegistry

GOAL = 0.90
DISTINCT_ARTIFACTS = 16  # tasks cycle over this many PEFT-made artifacts (their bytes differ per artifact)


async def fill(ctx: Context, store: FileStore, count: int) -> None:
    spec = ctx.engine.base.spec
    artifacts = ctx.artifacts("prompt_tuning", DISTINCT_ARTIFACTS)
    files = [(a.config_bytes, a.weights_bytes) for a in artifacts]
    for index in range(count):
        config, weights = files[index % len(files)]
        parsed = parse_artifact(config, weights, spec)
        draft = VersionRecord(
            task=f"task-{index}", peft_type=parsed.peft_type, num_virtual_tokens=parsed.num_virtual_tokens,
            num_tasks=parsed.num_tasks, config=parsed.config, sha256=parsed.sha256, nbytes=parsed.nbytes,
            spec_fingerprint=spec.fingerprint(),
        )  # fmt: skip
        await store.create_version(draft, config, weights)


async def warm_up(registry: PromptRegistry, tasks: list[int]) -> None:
    """Build (and evict, as the budget requires) each task in turn, as requests for them would."""
    for task in tasks:
        registry.release(await registry.acquire(f"task-{task}"))


async def serve_all(
    registry: PromptRegistry, runner: AsyncEngine, jobs: list[tuple[str, Request]], concurrency: int
) -> float:
    """Tokens per second with `concurrency` requests in flight, each resolving its task as the server does."""
    queue = list(reversed(jobs))
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while queue:
            task, request = queue.pop()
            lease = await registry.acquire(task)
            done = functools.partial(registry.release, lease)  # as the server does: unpin when the row leaves
            stream = runner.submit(Request(request.input_ids, lease.prompt, params=request.params, on_done=done))
            tokens += len((await stream.result()).token_ids)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens / (time.perf_counter() - start)


async def measure(ctx: Context) -> dict[str, object]:
    p = ctx.profile
    store = FileStore(ctx.scratch / "many-tasks")
    await fill(ctx, store, p.many_tasks)
    per_task = ctx.prompts("prompt_tuning", 1)[0].nbytes
    build, spec = ctx.engine.build_prompt, ctx.engine.base.spec
    small = PromptRegistry(store, spec, build, budget_bytes=p.many_cached * per_task)
    everything = PromptRegistry(store, spec, build, budget_bytes=(p.many_tasks + 1) * per_task)
    shapes = ctx.shapes(p.many_requests, seed=6)
    workloads = []
    for repeat in range(p.repeats):
        tasks = zipf_choices(p.many_requests, p.many_tasks, 1.0, seed=repeat)
        workloads.append([(f"task-{t}", shape.request(None)) for t, shape in zip(tasks, shapes, strict=True)])
    for task in {task for jobs in workloads for task, _ in jobs}:  # "all cached": built before timing
        everything.release(await everything.acquire(task))
    await warm_up(small, zipf_choices(p.many_warmup, p.many_tasks, 1.0, seed=p.repeats))  # a seed no repeat uses
    before = dataclasses.replace(small.pool.stats)
    runner = AsyncEngine(ctx.engine.core(SchedulerConfig(max_batch_size=p.http_concurrency)))
    runner.start()
    samples: dict[str, list[float]] = {"cache_for_some": [], "all_cached": []}
    for repeat, jobs in enumerate(workloads):
        sides = [("cache_for_some", small), ("all_cached", everything)]
        for name, registry in sides if repeat % 2 == 0 else sides[::-1]:
            samples[name].append(await serve_all(registry, runner, jobs, p.http_concurrency))
    await runner.stop()
    stats = small.pool.stats
    distinct = len({task for jobs in workloads for task, _ in jobs})
    return {
        "tokens_per_s": samples, "registered": p.many_tasks, "cache_holds": p.many_cached,
        "requests_per_repeat": p.many_requests, "distinct_tasks_requested": distinct,
        "warmup_draws": p.many_warmup,
        "small_cache_timed": {
            "hits": stats.hits - before.hits, "misses": stats.misses - before.misses,
            "evictions": stats.evictions - before.evictions,
        },
        "bytes_per_task": per_task,
    }  # fmt: skip


def run(ctx: Context) -> SuiteResult:
    data = asyncio.run(measure(ctx))
    samples = data["tokens_per_s"]
    assert isinstance(samples, dict)
    ratio = ratios(samples["cache_for_some"], samples["all_cached"])
    data["ratio"] = ratio
    data["tokens_per_s"] = {name: Spread.of(values) for name, values in samples.items()}
    target = Target(f"cache for {ctx.profile.many_cached} / all cached throughput", ratio, GOAL)
    return SuiteResult("many_tasks", data, [target])
