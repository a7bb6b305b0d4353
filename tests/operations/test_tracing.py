"""Trace spans drawn from the engine's timing of a real request, collected by the SDK's in-memory exporter."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.tracing import add_engine_spans, tracer_provider
from tests.conftest import Zoo


def test_a_request_is_one_span_with_queue_prefill_and_decode_children(llama_zoo: Zoo) -> None:
    exporter = InMemorySpanExporter()
    provider = tracer_provider(exporter)
    tracer = provider.get_tracer("test")
    served = llama_zoo.engine()
    generation = served.engine.generate([served.request([5, 6, 7], "prefix", max_new_tokens=4, stop_at_eos=False)])[0]
    assert generation.timing is not None
    attributes = {"promptswap.task": "prefix", "promptswap.tokens_out": len(generation.token_ids)}
    with tracer.start_as_current_span("POST /v1/generate") as request_span:
        add_engine_spans(tracer, generation.timing, attributes)
    provider.force_flush()
    finished = exporter.get_finished_spans()
    spans = {span.name: span for span in finished}
    assert (
        sorted(spans) == sorted(span.name for span in finished) == ["POST /v1/generate", "decode", "prefill", "queue"]
    )
    parent = request_span.get_span_context().span_id
    children = [spans[name] for name in ("queue", "prefill", "decode")]
    assert all(child.parent is not None and child.parent.span_id == parent for child in children)
    assert [child.start_time for child in children] == [
        generation.timing.arrived_ns,
        generation.timing.admitted_ns,
        generation.timing.first_token_ns,
    ]
    assert children[-1].end_time == generation.timing.finished_ns
    assert all(child.attributes["promptswap.task"] == "prefix" for child in children)
