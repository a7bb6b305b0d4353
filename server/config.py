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
