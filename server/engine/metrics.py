"""Engine metrics as Prometheus collectors in a registry the caller owns (no global state).

Latencies are histograms with buckets that fit a CPU (seconds per token) and a GPU (milliseconds) alike,
labelled by task. Task labels are bounded: `TaskLabels` gives the most active `max_tasks` tasks their own
label and counts the rest as "other", so a server with thousands of tasks keeps a small /metrics.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From a GPU's first token after a few milliseconds to a long CPU prefill behind a full queue.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)
BASE_MODEL = "(base model)"
OTHER = "other"
DEFAULT_MAX_TASKS = 20
RELABEL_EVERY = 100  # requests between two reviews of which tasks are the most active


class TaskLabels:
    """The label for a task: its own name while it is among the `max_tasks` most active, else "other".

    Activity is the number of requests seen. Every RELABEL_EVERY requests the set of named tasks is
    reviewed; a task that drops out loses its series (`on_drop`), so /metrics stays bounded."""

    def __init__(self, max_tasks: int = DEFAULT_MAX_TASKS) -> None:
        self.max_tasks = max_tasks
        self.named: set[str] = set()
        self.on_drop: list[MetricWrapperBase] = []  # metrics labelled by task: a dropped task's series go
        self._seen: Tally[str] = Tally()
        self._since_review = 0
        self._lock = threading.Lock()

    def label(self, task: str | None) -> str:
        """Count a request of `task` (None: the base model) and return its label."""
        name = BASE_MODEL if task is None else task
        with self._lock:
            self._seen[name] += 1
            self._since_review += 1
            if name not in self.named and len(self.named) < self.max_tasks:
                self.named.add(name)
            elif self._since_review >= RELABEL_EVERY:
                self._review()
            return name if name in self.named else OTHER

    def _review(self) -> None:
        self._since_review = 0
        most_active = {name for name, _ in self._seen.most_common(self.max_tasks)}
        for dropped in self.named - most_active:
            for metric in self.on_drop:
                with contextlib.suppress(KeyError):  # never observed under that label
                    metric.remove(dropped)
        self.named = most_active


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, max_tasks: int = DEFAULT_MAX_TASKS) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tasks = TaskLabels(max_tasks)
        self.queue_depth = Gauge("promptswap_queue_depth", "Requests waiting to join the batch", registry=r)
        self.batch_size = Gauge("promptswap_batch_size", "Rows in the running batch", registry=r)
        self.generated_tokens = Counter("promptswap_generated_tokens", "Tokens generated", registry=r)
        self.prefill_tokens = Counter("promptswap_prefill_tokens", "Input tokens prefilled", registry=r)
        self.prompt_tokens = Counter("promptswap_prompt_tokens", "Input tokens of admitted requests", registry=r)
        self.virtual_tokens = Counter(
            "promptswap_virtual_tokens", "Virtual tokens of the task prompts of admitted requests", registry=r
        )
        self.prefill_seconds = Histogram(
            "promptswap_prefill_step_seconds", "Time of one prefill pass", buckets=STEP_BUCKETS, registry=r
        )
        self.decode_seconds = Histogram(
            "promptswap_decode_step_seconds", "Time of one decode step", buckets=STEP_BUCKETS, registry=r
        )
        self.queue_wait = self._by_task(
            "queue_wait_seconds", "From a request's arrival in the engine to its admission", LATENCY_BUCKETS
        )
        self.time_to_first_token = self._by_task(
            "time_to_first_token_seconds", "From a request's arrival in the engine to its first token", LATENCY_BUCKETS
        )
        self.time_per_output_token = self._by_task(
            "time_per_output_token_seconds", "Time between two tokens of one request", TOKEN_BUCKETS
        )
        self.request_latency = self._by_task(
            "request_latency_seconds", "From a request's arrival in the engine to its last event", LATENCY_BUCKETS
        )
        self.kv_capacity_bytes = Gauge(
            "promptswap_kv_capacity_bytes", "Bytes of the key/value pool for the rows' own tokens", registry=r
        )
        self.kv_row_bytes = Gauge(
            "promptswap_kv_row_bytes", "Bytes of keys/values the running rows hold for their own tokens", registry=r
        )
        self.kv_prefix_bytes = Gauge(
            "promptswap_kv_prefix_bytes", "Bytes of the distinct task prefixes the running rows read", registry=r
        )
        self.finished = Counter("promptswap_requests_finished", "Requests that left the engine", ["reason"], registry=r)

    def _by_task(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        """A latency histogram labelled by task, whose series go when their task stops being among the named."""
        histogram = Histogram(f"promptswap_{name}", documentation, ["task"], buckets=buckets, registry=self.registry)
        self.tasks.on_drop.append(histogram)
        return histogram
