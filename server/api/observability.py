"""GET /health, /ready and /metrics, and the HTTP metrics middleware."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from prompt_store.errors import UserError
from server.api.auth import require_metrics_reader
from server.api.errors import error_response, user_error_response
from server.api.request_context import route_of
from server.api.responses import Health, Ready, answers
from server.engine.metrics import TaskLabels
from server.prompts.registry import PromptRegistry

router = APIRouter()


@router.get("/health", response_model=None, responses=answers(Health, ()))
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None, responses=answers(Ready, (503,)))
async def ready(request: Request) -> dict[str, str] | JSONResponse:
    state = request.app.state.server
    if request.app.state.admission.draining:
        message = "this replica is shutting down and admits no new requests"
        return error_response(503, "shutting_down", message)
    try:
        await state.store.ping()
    except UserError as error:
        return user_error_response(error, status=503)
    return {"status": "ready", "model": state.model_name}


@router.get(
    "/metrics", dependencies=[Depends(require_metrics_reader)], response_class=PlainTextResponse,
    responses={**answers(None, (401, 403)), 200: {"description": "Prometheus text format"}},
)  # fmt: skip
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.server.metrics), media_type=CONTENT_TYPE_LATEST)


class DeviceCacheCollector(Collector):
    """Device-cache counters read from the pool when scraped."""

    def __init__(self, registry: PromptRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.registry.pool.stats
        for name, value in (("hits", stats.hits), ("misses", stats.misses), ("evictions", stats.evictions)):
            yield CounterMetricFamily(f"promptswap_device_cache_{name}", f"Device cache {name}", value=value)
        yield GaugeMetricFamily(
            "promptswap_device_cache_bytes", "Bytes of runtime forms", value=self.registry.pool.nbytes
        )


class HttpMetrics:
    """Request counts and latencies by route and status; task labels for at most `max_tasks` tasks."""

    def __init__(self, registry: CollectorRegistry, max_tasks: int) -> None:
        self.requests = Counter("promptswap_http_requests", "HTTP requests", ["route", "status"], registry=registry)
        self.latency = Histogram(
            "promptswap_http_request_seconds", "HTTP request latency", ["route"], registry=registry
        )
        self.task_requests = Counter(
            "promptswap_task_requests", "Inference requests by task", ["task"], registry=registry
        )
        self.tasks = TaskLabels(max_tasks)  # the most active tasks by name, the rest as "other"
        self.tasks.on_drop.append(self.task_requests)

    def count_task(self, task: str | None) -> None:
        """Count an inference request. Call it only with a task the registry resolved: a label per name a
        client can make up would let anyone grow /metrics without bound and use up the task labels."""
        self.task_requests.labels(self.tasks.label(task)).inc()

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        path = route_of(request.scope)
        self.requests.labels(path, str(response.status_code)).inc()
        self.latency.labels(path).observe(time.perf_counter() - start)
        return response
