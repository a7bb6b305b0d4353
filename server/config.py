"""Server settings: one frozen dataclass, built once from flags and PROMPTSWAP_* variables (in cli)."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.engine.scheduler import SchedulerConfig


@dataclass(frozen=True)
class ServerConfig:
    model: str | None = None  # path or hub id; None: the embedded default (SmolLM2-135M-Instruct)
    store: str | None = None  # file:///DIR or redis://HOST:PORT/DB; None: a per-user directory
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    dtype: str = "auto"
    admin_key: str | None = None  # required for registry writes when set
    inference_key: str | None = None  # required for inference routes when set
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)  # batch, KV cache and queue limits
    device_cache_bytes: int = 2 << 30
    max_upload_bytes: int = 256 << 20
    max_body_bytes: int = 8 << 20  # JSON request bodies
    max_inputs: int = 64  # rows in one request
    max_labels: int = 100
    max_task_labels: int = 100  # distinct task names given their own metric label
    shutdown_timeout: float = 30.0  # seconds running requests get to finish after SIGTERM
    otlp_endpoint: str | None = None  # send traces there (OTLP/HTTP); None: no tracing
    log_content: bool = False  # put request inputs in the access log lines
    max_classify_tokens: int = 4096  # inputs × labels × verbalizer tokens one classify request may score
    max_client_requests: int | None = None  # in flight per client (key, else address); None: half the batch; 0: no cap
    trust_forwarded_for: bool = False  # the client's address is X-Forwarded-For's last (a proxy in front adds it)
    max_form_bytes: int | None = None  # one task version's runtime form; None: a quarter of the device cache
    public_metrics: bool = False  # /metrics answers without a key even where --inference-key is set

    @property
    def client_request_limit(self) -> int:
        """Requests one client may have in flight (0: no limit). By default no client can hold more than
        half the batch, so one that never reads its streams cannot starve the others."""
        if self.max_client_requests is None:
            return max(1, self.scheduler.max_batch_size // 2)
        return self.max_client_requests

    @property
    def form_limit_bytes(self) -> int:
        """The largest runtime form one task version may have; by default four fit the device cache."""
        return self.device_cache_bytes // 4 if self.max_form_bytes is None else self.max_form_bytes
