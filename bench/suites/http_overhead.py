"""4. HTTP overhead: the same requests through a live `promptswap serve` with concurrent clients, and
through the engine called directly in this process (same continuous batching, tokenizer and prompts).

Each side keeps `http_concurrency` requests in flight (closed loop). Outputs stop at EOS or the
length limit on both sides (the HTTP API has no switch to ignore EOS), so throughput is counted
in generated tokens per second from each side's own usage counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from bench.context import Context
from bench.measure import Spread, Target, ratios
from bench.results import SuiteResult
from server.engine.async_engine import AsyncEngine
from server.engine.engine import Request
from server.engine.sampling import SamplingParams
from server.engine.scheduler import SchedulerConfig

GOAL = 0.90
NUM_TASKS = 4

Job = tuple[str, str, int]  # task, text, max_new_tokens


async def closed_loop(jobs: list[Job], concurrency: int, send: Callable[[Job], Awaitable[int]]) -> float:
    """Generated tokens per second with `concurrency` requests in flight until every job is done."""
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while not queue.empty():
            tokens += await send(queue.get_nowait())

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens / (time.perf_counter() - start)


def upload_tasks(ctx: Context, client: httpx.Client, names: list[str]) -> None:
    for name, files in zip(names, ctx.artifacts("prompt_tuning", len(names)), strict=True):
        upload = {"adapter_config.json": files.config_bytes, "adapter_model.safetensors": files.weights_bytes}
        client.post(f"/v1/prompts/{name}", files=upload).raise_for_status()


async def measure(ctx: Context, jobs: list[Job], names: list[str]) -> dict[str, list[float]]:
    concurrency = ctx.profile.http_concurrency
    engine = ctx.engine
    prompts = dict(zip(names, ctx.prompts("prompt_tuning", len(names)), strict=True))
    scheduler = SchedulerConfig(max_batch_size=concurrency)
    direct = AsyncEngine(engine.core(scheduler))
    direct.start()

    async def send_direct(job: Job) -> int:
        task, text, new_tokens = job
        ids = ctx.tokenizer(text)["input_ids"]
        params = SamplingParams(max_new_tokens=new_tokens)
        generation = await direct.submit(Request(ids, prompts[task], params=params)).result()
        return len(generation.token_ids)

    samples: dict[str, list[float]] = {"http": [], "direct": []}
    async with httpx.AsyncClient(base_url=ctx.server().url, timeout=600.0) as client:

        async def send_http(job: Job) -> int:
            task, text, new_tokens = job
            body = {"task": task, "inputs": text, "parameters": {"max_new_tokens": new_tokens}}
            response = await client.post("/v1/generate", json=body)
            response.raise_for_status()
            return int(response.json()["outputs"][0]["usage"]["completion_tokens"])

        sides = [("http", send_http), ("direct", send_direct)]
        await closed_loop(jobs[:concurrency], concurrency, send_http)  # warm-up
        for repeat in range(ctx.profile.repeats):
            for name, send in sides if repeat % 2 == 0 else sides[::-1]:
                samples[name].append(await closed_loop(jobs, concurrency, send))
    await direct.stop()
    return samples


def run(ctx: Context) -> SuiteResult:
    names = [f"http-{i}" for i in range(NUM_TASKS)]
    with httpx.Client(base_url=ctx.server().url, timeout=600.0) as client:
        upload_tasks(ctx, client, names)
    shapes = ctx.shapes(ctx.profile.http_requests, seed=4)
    jobs = [(names[i % NUM_TASKS], ctx.tokenizer.decode(s.input_ids), s.new_tokens) for i, s in enumerate(shapes)]
    samples = asyncio.run(measure(ctx, jobs, names))
    ctx.server_peaks["after http_overhead"] = ctx.server().peak_resident_bytes()
    ratio = ratios(samples["http"], samples["direct"])
    data = {
        "requests": len(jobs), "concurrency": ctx.profile.http_concurrency, "tasks": NUM_TASKS,
        "tokens_per_s": {name: Spread.of(values) for name, values in samples.items()}, "ratio": ratio,
    }  # fmt: skip
    return SuiteResult("http_overhead", data, [Target("HTTP / direct engine throughput", ratio, GOAL)])
