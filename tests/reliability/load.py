"""A bounded load on loopback: N concurrent clients mixing generate, stream, classify and uploads.

Counts every answer, keeps latencies per kind, and samples the server's resident memory. An answer
is an error unless it is a success or an explicit 429 with Retry-After (which the client honours).
Every client says who it is as a proxy in front would (X-Forwarded-For; the server trusts it), so the
server's per-client limit sees 64 clients, not one loopback address.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.reliability.errors import ADMIN

KINDS = ("generate", "stream", "classify", "upload")
MIX = ["generate"] * 4 + ["stream"] * 3 + ["classify"] * 2 + ["upload"]  # one upload in ten requests
TASKS = ["pt", "prefix", "mpt"]


@dataclass
class LoadReport:
    clients: int
    seconds: float
    requests: Counter[str] = field(default_factory=Counter)
    refused_429: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)

    def percentile(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def rss_growth(self, warm_up: float) -> float:
        """Resident memory at the end over resident memory when warm-up ended, minus one."""
        after = [rss for at, rss in self.rss_samples if at >= warm_up]
        return after[-1] / after[0] - 1.0

    def summary(self, warm_up: float) -> dict[str, object]:
        every = [x for values in self.latencies.values() for x in values]
        return {
            "clients": self.clients,
            "seconds": self.seconds,
            "requests": dict(self.requests),
            "requests_per_second": round(sum(self.requests.values()) / self.seconds, 1),
            "refused_429": self.refused_429,
            "errors": len(self.errors),
            "p50_ms": {k: round(1000 * self.percentile(v, 0.5), 1) for k, v in self.latencies.items()},
            "p99_ms": {k: round(1000 * self.percentile(v, 0.99), 1) for k, v in self.latencies.items()},
            "p50_ms_all": round(1000 * self.percentile(every, 0.5), 1),
            "p99_ms_all": round(1000 * self.percentile(every, 0.99), 1),
            "rss_mb_after_warm_up": round(next(r for t, r in self.rss_samples if t >= warm_up) / 2**20, 1),
            "rss_mb_end": round(self.rss_samples[-1][1] / 2**20, 1),
            "rss_growth_percent": round(100 * self.rss_growth(warm_up), 2),
        }


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def run_load(url: str, pid: int, clients: int, seconds: float, uploads: list[dict[str, bytes]]) -> LoadReport:
    report = LoadReport(clients, seconds)
    start = time.monotonic()
    deadline = start + seconds
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def sample_memory() -> None:
            while time.monotonic() < deadline:
                report.rss_samples.append((time.monotonic() - start, resident_bytes(pid)))
                await asyncio.sleep(1.0)
            report.rss_samples.append((time.monotonic() - start, resident_bytes(pid)))

        async def user(index: int) -> None:
            turn = index
            while time.monotonic() < deadline:
                kind = MIX[turn % len(MIX)]
                turn += 1
                began = time.monotonic()
                try:
                    retry_after = await one_request(client, kind, index, turn, uploads, report)
                except httpx.HTTPError as error:
                    report.errors.append(f"{kind}: {type(error).__name__}: {error}")
                    continue
                if retry_after is None:
                    report.latencies[kind].append(time.monotonic() - began)
                    report.requests[kind] += 1
                else:
                    report.refused_429 += 1
                    await asyncio.sleep(retry_after)  # what a well-behaved client does with Retry-After

        await asyncio.gather(sample_memory(), *(user(i) for i in range(clients)))
    return report


async def one_request(
    client: httpx.AsyncClient, kind: str, index: int, turn: int, uploads: list[dict[str, bytes]], report: LoadReport
) -> float | None:
    """Send one request of `kind`; return the Retry-After seconds of a 429, else None (errors go in `report`)."""
    task = TASKS[(index + turn) % len(TASKS)]
    text = f"client {index} request {turn}"
    address = {"X-Forwarded-For": f"198.51.100.{index}"}
    if kind == "upload":
        parts = uploads[turn % len(uploads)]
        files = {name: (name, data) for name, data in parts.items()}
        response = await client.post(f"/v1/prompts/load-{index % 4}", files=files, headers={**ADMIN, **address})
        expected = 201
    elif kind == "classify":
        body = {"task": task, "inputs": [text, "another"], "labels": ["good", "bad"]}
        response = await client.post("/v1/classify", json=body, headers=address)
        expected = 200
    else:
        body = {"task": task, "inputs": text, "stream": kind == "stream", "parameters": {"max_new_tokens": 6}}
        response = await client.post("/v1/generate", json=body, headers=address)
        expected = 200
        if response.status_code == 200 and kind == "stream" and not stream_is_whole(response.text):
            report.errors.append(f"stream: {response.text[-300:]}")
    if response.status_code == 429 and "retry-after" in response.headers:
        return float(response.headers["retry-after"])
    if kind == "upload" and response.status_code == 200 and response.json().get("unchanged"):
        return None  # another client had just uploaded the same files to this task: nothing to create
    if response.status_code != expected:
        report.errors.append(f"{kind}: {response.status_code} {response.text[:300]}")
    return None


def stream_is_whole(text: str) -> bool:
    events = [block.removeprefix("data: ") for block in text.split("\n\n") if block.startswith("data: ")]
    finished = [json.loads(e) for e in events[:-1] if '"finish_reason"' in e]
    return bool(events) and events[-1] == "[DONE]" and len(finished) == 1 and "error" not in finished[0]
