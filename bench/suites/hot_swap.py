"""5. Hot swap under load: upload new versions of a task while Poisson-arriving requests hit it.

The load is bounded: at most `load_in_flight` background requests are outstanding; an arrival
that finds them all busy waits for one to finish. Unbounded, a rate the server cannot keep up
with on a slow machine grows its queue without end, and the swap times then measure that queue.
The rate actually achieved is reported next to the configured one. Uploads are `swap_gap_s`
apart, so the load runs throughout rather than only in the moments between back-to-back uploads.

Per method (prompt tuning, prefix tuning), `swaps` uploads of a fresh PEFT artifact to one task.
Upload-to-servable is the time from sending the upload to its 201: API.md promises every request
admitted after the 201 gets the new version. Each upload is followed by a one-token request
that must answer with the new version (upload-to-first-answer, also reported). Errors: any
background or check request that failed or got the wrong version.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import asdict, dataclass, field

import httpx

from bench.context import Context
from bench.measure import Spread, Target, percentile
from bench.results import SuiteResult
from bench.workload import poisson_gaps

GOAL_MS = 250.0
METHODS = ("prompt_tuning", "prefix")


class Load:
    """Poisson arrivals of short generate requests on `tasks`, at most `in_flight` outstanding, until stopped."""

    def __init__(
        self, client: httpx.AsyncClient, tasks: list[str], rate: float, in_flight: int, texts: list[str]
    ) -> None:
        self.client, self.tasks, self.rate, self.texts = client, tasks, rate, texts
        self.slots = asyncio.Semaphore(in_flight)
        self.sent = self.failed = 0
        self.pending: set[asyncio.Task[None]] = set()
        self.started = time.perf_counter()

    async def one(self, task: str, text: str) -> None:
        body = {"task": task, "inputs": text, "parameters": {"max_new_tokens": 8}}
        try:
            response = await self.client.post("/v1/generate", json=body)
            self.failed += response.status_code != 200
        except httpx.HTTPError:
            self.failed += 1
        finally:
            self.slots.release()

    async def run(self) -> None:
        rng = random.Random(5)
        self.started = time.perf_counter()
        for gap in itertools.chain.from_iterable(itertools.repeat(poisson_gaps(1000, self.rate, seed=5))):
            await asyncio.sleep(gap)
            await self.slots.acquire()  # the bound: a late arrival waits rather than queueing in the server
            self.sent += 1
            request = asyncio.create_task(self.one(rng.choice(self.tasks), rng.choice(self.texts)))
            self.pending.add(request)
            request.add_done_callback(self.pending.discard)

    def achieved_rate(self) -> float:
        return self.sent / (time.perf_counter() - self.started)


async def swap(client: httpx.AsyncClient, task: str, config: bytes, weights: bytes) -> tuple[float, float, bool]:
    """Seconds to the 201 and to the first answer from the new version; whether all went right."""
    start = time.perf_counter()
    files = {"adapter_config.json": config, "adapter_model.safetensors": weights}
    response = await client.post(f"/v1/prompts/{task}", files=files)
    uploaded = time.perf_counter() - start
    if response.status_code != 201:
        return uploaded, uploaded, False
    version = response.json()["version"]
    body = {"task": task, "inputs": "hello", "parameters": {"max_new_tokens": 1}}
    answer = await client.post("/v1/generate", json=body)
    answered = time.perf_counter() - start
    return uploaded, answered, answer.status_code == 200 and answer.json()["version"] == version


@dataclass
class Swaps:
    """One method's uploads under load."""

    upload_ms: list[float] = field(default_factory=list)
    first_answer_ms: list[float] = field(default_factory=list)
    failed_swaps: int = 0
    load_requests: int = 0
    load_errors: int = 0
    load_rate_achieved_per_s: float = 0.0

    @property
    def errors(self) -> int:
        return self.failed_swaps + self.load_errors


async def swaps_under_load(ctx: Context, client: httpx.AsyncClient, method: str, texts: list[str]) -> Swaps:
    artifacts = ctx.artifacts(method, ctx.profile.swaps + 1)
    task = f"swap-{method}"
    await swap(client, task, artifacts[0].config_bytes, artifacts[0].weights_bytes)  # the task exists before load
    load = Load(client, [task], ctx.profile.load_rate, ctx.profile.load_in_flight, texts)
    loader = asyncio.create_task(load.run())
    result = Swaps()
    for files in artifacts[1:]:
        await asyncio.sleep(ctx.profile.swap_gap_s)  # the load runs between uploads too, so each one meets it
        uploaded, answered, ok = await swap(client, task, files.config_bytes, files.weights_bytes)
        result.upload_ms.append(uploaded * 1e3)
        result.first_answer_ms.append(answered * 1e3)
        result.failed_swaps += not ok
    loader.cancel()
    result.load_rate_achieved_per_s = load.achieved_rate()
    await asyncio.gather(*load.pending)
    result.load_requests, result.load_errors = load.sent, load.failed
    return result


async def measure(ctx: Context) -> dict[str, Swaps]:
    texts = [ctx.tokenizer.decode(s.input_ids) for s in ctx.shapes(16, seed=5)]
    async with httpx.AsyncClient(base_url=ctx.server().url, timeout=600.0) as client:
        return {method: await swaps_under_load(ctx, client, method, texts) for method in METHODS}


def run(ctx: Context) -> SuiteResult:
    results = asyncio.run(measure(ctx))
    ctx.server_peaks["after hot_swap"] = ctx.server().peak_resident_bytes()
    data, targets = {}, []
    for method, swaps in results.items():
        uploads, answers = swaps.upload_ms, swaps.first_answer_ms
        data[method] = {
            **asdict(swaps), "upload_p50_ms": percentile(uploads, 0.5), "upload_p95_ms": percentile(uploads, 0.95),
            "first_answer_p50_ms": percentile(answers, 0.5), "first_answer_p95_ms": percentile(answers, 0.95),
            "load_rate_per_s": ctx.profile.load_rate, "load_in_flight": ctx.profile.load_in_flight,
        }  # fmt: skip
        targets.append(Target(f"{method}: upload-to-servable p50", Spread.of(uploads), GOAL_MS, False, " ms"))
        targets.append(Target(f"{method}: errors during swaps", Spread.of([swaps.errors]), 0, False, ""))
    return SuiteResult("hot_swap", data, targets)
