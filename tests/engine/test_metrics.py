"""The engine's latency and token metrics against a known workload, and the bound on task labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from server.engine.metrics import BASE_MODEL, OTHER, RELABEL_EVERY, EngineMetrics, TaskLabels
from server.engine.scheduler import SchedulerConfig
from tests.conftest import TASKS, Zoo


def test_three_requests_of_known_lengths(llama_zoo: Zoo) -> None:
    """3 requests (inputs of 3, 4 and 5 tokens; 4, 5 and 6 new tokens; two tasks and the base model), two of
    them waiting for a row: every counter and histogram count is what that workload implies."""
    served = llama_zoo.engine()
    metrics = EngineMetrics()
    core = served.engine.core(SchedulerConfig(max_batch_size=2), metrics)
    workload = [("prefix", 3, 4), (None, 4, 5), ("prompt_tuning", 5, 6)]
    ids = [
        core.add(served.request(list(range(3, 3 + length)), task, max_new_tokens=new_tokens, stop_at_eos=False))
        for task, length, new_tokens in workload
    ]
    timings = {}
    while core.has_work:
        timings.update({event.request_id: event.timing for event in core.step() if event.timing is not None})
    # The moments a trace is drawn from, in order; the third request was admitted when the first had finished.
    first, _, third = (timings[i] for i in ids)
    for timing in timings.values():
        assert 0 < timing.arrived_ns <= timing.admitted_ns <= timing.first_token_ns <= timing.finished_ns
    assert third.admitted_ns >= first.finished_ns
    sample = metrics.registry.get_sample_value
    assert sample("promptswap_prompt_tokens_total") == 3 + 4 + 5
    assert sample("promptswap_virtual_tokens_total") == TASKS["prefix"][1] + TASKS["prompt_tuning"][1]
    assert sample("promptswap_generated_tokens_total") == 4 + 5 + 6
    for task, _, new_tokens in workload:
        label = {"task": task or BASE_MODEL}
        assert sample("promptswap_queue_wait_seconds_count", label) == 1
        assert sample("promptswap_time_to_first_token_seconds_count", label) == 1
        assert sample("promptswap_time_per_output_token_seconds_count", label) == new_tokens - 1
        assert sample("promptswap_request_latency_seconds_count", label) == 1
        first = sample("promptswap_time_to_first_token_seconds_sum", label)
        total = sample("promptswap_request_latency_seconds_sum", label)
        assert 0 < sample("promptswap_queue_wait_seconds_sum", label) <= first <= total  # type: ignore[operator]


def test_task_labels_follow_the_most_active_tasks() -> None:
    """Two labels: the first two tasks get them; once a third is more active than the second at a review,
    it takes that label and the dropped task's series leave /metrics."""
    labels = TaskLabels(max_tasks=2)
    latency = Histogram("latency_seconds", "test", ["task"], registry=CollectorRegistry())
    labels.on_drop.append(latency)

    def request(task: str) -> str:
        label = labels.label(task)
        latency.labels(label).observe(1.0)
        return label

    assert [request("a"), request("b"), request("c")] == ["a", "b", OTHER]
    for i in range(RELABEL_EVERY):
        assert request("c" if i % 2 else "a") in ("a", "c", OTHER)
    assert request("c") == "c" and request("b") == OTHER
    exported = {s.labels["task"] for metric in latency.collect() for s in metric.samples}
    assert exported == {"a", "c", OTHER}
