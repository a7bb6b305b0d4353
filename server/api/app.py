"""`create_app`: the FastAPI application over one loaded base model. All state lives on `app.state`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Gauge

from prompt_store.store import open_store
from server.api import docs, observability, routes_inference, routes_openai, routes_prompts
from server.api.admission import Admission, AdmissionMiddleware
from server.api.auth import require_reader
from server.api.body_limit import BodyLimit
from server.api.client_limit import ClientLimit
from server.api.errors import install_error_handlers
from server.api.observability import DeviceCacheCollector, HttpMetrics
from server.api.request_context import RequestContext
from server.api.service import ServerState
from server.config import ServerConfig
from server.engine.async_engine import AsyncEngine
from server.engine.engine import Engine
from server.engine.metrics import EngineMetrics
from server.engine.model import BaseModel
from server.prompts.registry import PromptRegistry
from server.tracing import otlp_provider


def create_app(
    config: ServerConfig, base: BaseModel, tokenizer: Any, model_name: str, traces: TracerProvider | None = None
) -> FastAPI:
    """`traces`: where spans go (tests pass an in-memory one); default: `config.otlp_endpoint`, if set."""
    if traces is None and config.otlp_endpoint:
        traces = otlp_provider(config.otlp_endpoint)
    metrics = CollectorRegistry()
    engine = Engine(base, tokenizer)
    generates = engine.kind.runner is not None
    core = engine.core(config.scheduler, EngineMetrics(metrics, config.max_task_labels)) if generates else None
    async_engine = AsyncEngine(core)
    store = open_store(config.store)
    registry = PromptRegistry(
        store, base.spec, engine.build_prompt, config.device_cache_bytes, config.max_upload_bytes,
        cache_pointers=store.shares_events, max_form_bytes=config.form_limit_bytes, dtype_bytes=base.dtype.itemsize,
    )  # fmt: skip
    metrics.register(DeviceCacheCollector(registry))
    http = HttpMetrics(metrics, config.max_task_labels)
    state = ServerState(config, model_name, engine, async_engine, store, registry, metrics, http)
    admission = Admission()
    in_flight = Gauge("promptswap_http_requests_in_flight", "Requests admitted, not yet answered", registry=metrics)
    in_flight.set_function(lambda: admission.running)
    draining = Gauge("promptswap_draining", "1 while shutting down (new requests get 503)", registry=metrics)
    draining.set_function(lambda: float(admission.draining))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async_engine.start()
        watcher = asyncio.create_task(registry.watch())
        try:
            yield
        finally:
            watcher.cancel()
            await async_engine.stop()
            await store.close()

    app = FastAPI(
        title="promptswap",
        summary="Serve PEFT soft prompts, prefixes and adaption prompts from one frozen base model.",
        version="1",
        lifespan=lifespan,
        openapi_url=None,  # served by `docs.router`, behind the inference key
        docs_url=None,
        redoc_url=None,
    )
    app.state.server = state
    app.state.admission = admission
    install_error_handlers(app)
    inference = [Depends(require_reader)]
    app.include_router(routes_inference.router, dependencies=inference)
    app.include_router(routes_openai.router, dependencies=inference)
    app.include_router(routes_prompts.router)
    app.include_router(observability.router)
    app.include_router(docs.router)
    app.include_router(docs.assets)
    app.middleware("http")(http.middleware)
    app.add_middleware(
        BodyLimit, json_limit=config.max_body_bytes, upload_limit=config.max_upload_bytes * 2 + (1 << 20)
    )
    app.add_middleware(ClientLimit, config=config, metrics=metrics)
    app.add_middleware(AdmissionMiddleware, admission=admission)
    tracer = traces.get_tracer("promptswap") if traces is not None else None
    app.add_middleware(RequestContext, tracer=tracer)  # added last: the outermost layer
    app.state.tracer = tracer
    return app
