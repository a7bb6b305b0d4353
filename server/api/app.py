"""`create_app`: the FastAPI application over one loaded base model. All state lives on `app.state`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry, Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prompt_store.errors import UserError
from prompt_store.store import open_store
from server.api import observability, routes_inference, routes_openai, routes_prompts
from server.api.admission import Admission, AdmissionMiddleware
from server.api.auth import require_inference
from server.api.errors import error_response, install_error_handlers
from server.api.observability import DeviceCacheCollector, HttpMetrics
from server.api.service import ServerState
from server.config import ServerConfig
from server.engine.async_engine import AsyncEngine
from server.engine.core import EngineCore
from server.engine.engine import Engine
from server.engine.metrics import EngineMetrics
from server.engine.model import BaseModel
from server.engine.scheduler import SchedulerConfig
from server.prompts.registry import PromptRegistry


def create_app(config: ServerConfig, base: BaseModel, tokenizer: Any, model_name: str) -> FastAPI:
    metrics = CollectorRegistry()
    engine = Engine(base, tokenizer)
    scheduler = SchedulerConfig(
        config.max_batch_size, config.max_batch_tokens, config.max_prefill_tokens, config.max_waiting
    )
    runner = AsyncEngine(EngineCore(engine, scheduler, EngineMetrics(metrics)))
    store = open_store(config.store)
    registry = PromptRegistry(
        store, base.spec, engine.build_prompt, config.device_cache_bytes, config.max_upload_bytes,
        cache_pointers=store.shares_events,
    )  # fmt: skip
    metrics.register(DeviceCacheCollector(registry))
    http = HttpMetrics(metrics, config.max_task_labels)
    state = ServerState(config, model_name, engine, runner, store, registry, metrics, http)
    admission = Admission()
    in_flight = Gauge("promptswap_http_requests_in_flight", "Requests admitted, not yet answered", registry=metrics)
    in_flight.set_function(lambda: admission.running)
    draining = Gauge("promptswap_draining", "1 while shutting down (new requests get 503)", registry=metrics)
    draining.set_function(lambda: float(admission.draining))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner.start()
        watcher = asyncio.create_task(registry.watch())
        try:
            yield
        finally:
            watcher.cancel()
            await runner.stop()
            await store.close()

    app = FastAPI(
        title="promptswap",
        summary="Serve PEFT soft prompts, prefixes and adaption prompts from one frozen base model.",
        version="1",
        lifespan=lifespan,
    )
    app.state.server = state
    app.state.admission = admission
    install_error_handlers(app)
    inference = [Depends(require_inference)]
    app.include_router(routes_inference.router, dependencies=inference)
    app.include_router(routes_openai.router, dependencies=inference)
    app.include_router(routes_prompts.router)
    app.include_router(observability.router)
    app.middleware("http")(http.middleware)
    app.add_middleware(
        BodyLimit, json_limit=config.max_body_bytes, upload_limit=config.max_upload_bytes * 2 + (1 << 20)
    )
    app.add_middleware(AdmissionMiddleware, admission=admission)  # added last: the outermost layer
    return app


class BodyLimit:
    """Refuse bodies past the limit with 413 before they are read whole (uploads get a larger one)."""

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        is_upload = b"multipart/form-data" in headers.get(b"content-type", b"")
        limit = self.upload_limit if is_upload else self.json_limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(413, "too_large", f"the request body is over {limit} bytes")(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge as error:
            await error_response(413, "too_large", f"the request body is over {error.limit} bytes")(
                scope, receive, send
            )


class BodyTooLarge(UserError):
    error_type = "too_large"
    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over {limit} bytes")
        self.limit = limit
