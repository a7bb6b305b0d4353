"""Engine metrics as Prometheus collectors in a registry the caller owns (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("promptswap_queue_depth", "Requests waiting to join the batch", registry=r)
        self.batch_size = Gauge("promptswap_batch_size", "Rows in the running batch", registry=r)
        self.generated_tokens = Counter("promptswap_generated_tokens", "Tokens generated", registry=r)
        self.prefill_tokens = Counter("promptswap_prefill_tokens", "Input tokens prefilled", registry=r)
        self.prefill_seconds = Histogram(
            "promptswap_prefill_step_seconds", "Time of one prefill pass", buckets=STEP_BUCKETS, registry=r
        )
        self.decode_seconds = Histogram(
            "promptswap_decode_step_seconds", "Time of one decode step", buckets=STEP_BUCKETS, registry=r
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
