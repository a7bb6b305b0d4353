"""Traces with OpenTelemetry: off unless an OTLP endpoint is configured.

The API opens one span per HTTP request. The engine never sees a trace: the last event of each request
says when it arrived in the engine, was admitted to the batch, got its first token and finished
(`Timing`), and `add_engine_spans` draws the request's children from those moments — queue wait, prefill
(admission to first token) and decode (first token to the end) — with the attributes an operator filters
on (task, version, PEFT type, tokens in and out, finish reason).
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from server.engine.request import Timing

SERVICE_NAME = "promptswap"
AttributeValue = str | int | float | bool


def tracer_provider(exporter: SpanExporter) -> TracerProvider:
    """A provider that sends finished spans to `exporter` in batches, off the request path."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def otlp_provider(endpoint: str) -> TracerProvider:
    """Spans to an OpenTelemetry collector over OTLP/HTTP, e.g. http://collector:4318/v1/traces."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return tracer_provider(OTLPSpanExporter(endpoint=endpoint))


def add_engine_spans(tracer: trace.Tracer, timing: Timing, attributes: Mapping[str, AttributeValue]) -> None:
    """The request's stages in the engine as children of the current span, each stage that happened."""
    stages = (
        ("queue", timing.arrived_ns, timing.admitted_ns),
        ("prefill", timing.admitted_ns, timing.first_token_ns),
        ("decode", timing.first_token_ns, timing.finished_ns),
    )
    for name, start, end in stages:
        if start and end:
            span = tracer.start_span(name, start_time=start, attributes=dict(attributes))
            span.end(end_time=end)
