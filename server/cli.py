"""The `promptswap` command line. Only this module wires the packages together.

`serve` and `check` load the model here; the client commands (`prompts`, `generate`,
`classify`) live in `clients.cli` and need no torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from urllib.parse import urlparse

from prompt_store.artifact import load_artifact_dir
from prompt_store.errors import UserError
from prompt_store.store import default_store_url
from server.config import ServerConfig
from server.engine.scheduler import SchedulerConfig

log = logging.getLogger("promptswap")

# Longer than the idle expiry of common clients (httpx and the openai client: 5 s). With uvicorn's own
# 5 s, a client could send on a connection at the moment the server closed it, and get a reset.
KEEP_ALIVE_SECONDS = 30


def env_default(flag: str, default: str | None) -> str | None:
    """Every flag also reads `PROMPTSWAP_<FLAG>`; read here, once, when the parser is built.

    An empty variable counts as unset, as compose files write `PROMPTSWAP_MODEL: ${PROMPTSWAP_MODEL:-}`.
    """
    return os.environ.get(f"PROMPTSWAP_{flag.upper().replace('-', '_')}") or default


def env_int(flag: str, default: int | None) -> int | None:
    value = env_default(flag, None)
    return default if value is None else int(value)


def env_switch(flag: str) -> bool:
    """A switch is on when its `PROMPTSWAP_<FLAG>` is 1, true, yes or on."""
    return (env_default(flag, None) or "").lower() in {"1", "true", "yes", "on"}


ENV_HELP = (
    "Every flag also reads the environment variable PROMPTSWAP_<FLAG> (e.g. --store: PROMPTSWAP_STORE, "
    "--max-batch-size: PROMPTSWAP_MAX_BATCH_SIZE, switches: 1/true/yes/on); an empty variable counts as unset, "
    "and a flag given on the command line wins."
)
DEFAULT_MODEL_HELP = "the embedded SmolLM2-135M-Instruct, a 4-bit GGUF expanded to float32"


def flag_help(flag: str, text: str) -> str:
    """Help that shows the default (argparse's %(default)s) and the variable the flag reads."""
    return f"{text} (default: %(default)s; env PROMPTSWAP_{flag.upper().replace('-', '_')})"


def add_number(parser: argparse.ArgumentParser, flag: str, kind: type, default: float, text: str) -> None:
    """A numeric flag, defaulting to its variable: argparse converts a string default with `kind`, so a bad
    value in the environment is a usage error that names the flag."""
    parser.add_argument(f"--{flag}", type=kind, default=env_default(flag, None) or default, help=flag_help(flag, text))


def add_text(parser: argparse.ArgumentParser, flag: str, default: str | None, text: str) -> None:
    parser.add_argument(f"--{flag}", default=env_default(flag, default), help=flag_help(flag, text))


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=env_default("model", None),
        help=f"a model folder or hub id (default: {DEFAULT_MODEL_HELP}; env PROMPTSWAP_MODEL)",
    )  # fmt: skip
    add_text(parser, "device", "auto", "auto | cpu | cuda")
    add_text(parser, "dtype", "auto", "auto | float32 | bfloat16 | float16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptswap", description="Serve PEFT soft prompts from one base model.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server", description=f"Run the HTTP server. {ENV_HELP}")
    add_model_flags(serve)
    serve.add_argument(
        "--store", default=env_default("store", None),
        help=f"file:///DIR or redis://HOST:PORT/DB (default: {default_store_url()}; env PROMPTSWAP_STORE)",
    )  # fmt: skip
    add_text(serve, "host", "127.0.0.1", "address to listen on")
    add_number(serve, "port", int, 8000, "port to listen on")
    serve.add_argument(
        "--admin-key", default=env_default("admin-key", None),
        help="key that registry changes need (default: none, anyone who reaches the server may change it; "
        "env PROMPTSWAP_ADMIN_KEY)",
    )  # fmt: skip
    serve.add_argument(
        "--admin-key-file", default=env_default("admin-key-file", None),
        help="read the admin key from this file (a container secret) instead (env PROMPTSWAP_ADMIN_KEY_FILE)",
    )  # fmt: skip
    serve.add_argument(
        "--inference-key", default=env_default("inference-key", None),
        help="key that inference and reads need (default: none; env PROMPTSWAP_INFERENCE_KEY)",
    )  # fmt: skip
    add_text(serve, "log-level", "info", "debug | info | warning | error")
    add_text(serve, "log-format", "text", "text | json (one JSON object per line, for log collectors)")
    serve.add_argument(
        "--log-content", action="store_true", default=env_switch("log-content"),
        help="put request inputs in the access log (default: never; env PROMPTSWAP_LOG_CONTENT)",
    )  # fmt: skip
    add_text(serve, "otlp-endpoint", None, "send traces to this OpenTelemetry collector, OTLP over HTTP "
             "(e.g. http://collector:4318/v1/traces; default: no tracing)")  # fmt: skip
    add_capacity_flags(serve)
    add_hostile_client_flags(serve)

    check = commands.add_parser("check", help="validate PEFT artifact directories against a model")
    check.add_argument("artifacts", nargs="+", help="directories written by PEFT's save_pretrained")
    add_model_flags(check)

    from clients.cli import add_client_commands

    add_client_commands(commands)
    return parser


def add_capacity_flags(serve: argparse.ArgumentParser) -> None:
    """How much the server holds and runs at once."""
    config, scheduler = ServerConfig(), SchedulerConfig()
    add_number(serve, "max-batch-size", int, scheduler.max_batch_size, "rows running at once")
    add_number(
        serve, "max-batch-tokens", int, 0,
        "KV positions the running rows may hold at most, whatever --kv-cache-mb would hold (0: no cap)",
    )  # fmt: skip
    add_number(
        serve, "kv-cache-mb", int, scheduler.kv_cache_bytes >> 20,
        "memory for the running rows' keys and values, allocated once (task prefixes are in the device cache)",
    )  # fmt: skip
    add_number(
        serve, "max-prefill-tokens", int, scheduler.max_prefill_tokens,
        "prompt tokens one step prefills; longer prompts are prefilled in chunks while other rows decode",
    )  # fmt: skip
    add_number(
        serve, "max-waiting", int, scheduler.max_waiting, "requests that may wait for a batch slot; past it, 429"
    )
    add_number(serve, "device-cache-mb", int, config.device_cache_bytes >> 20, "memory for task runtime forms")
    add_number(
        serve, "shutdown-timeout", float, config.shutdown_timeout,
        "seconds running requests get to finish after SIGTERM (new ones get 503 meanwhile)",
    )  # fmt: skip
    add_number(serve, "max-upload-mb", int, config.max_upload_bytes >> 20, "largest artifact file in an upload")
    add_number(serve, "max-body-mb", int, config.max_body_bytes >> 20, "largest JSON request body; past it, 413")
    add_number(serve, "max-inputs", int, config.max_inputs, "inputs (rows) in one request")
    add_number(serve, "max-labels", int, config.max_labels, "labels in one classify request")
    add_number(
        serve, "max-task-labels", int, config.max_task_labels,
        "tasks given their own label in /metrics; the rest count as 'other'",
    )  # fmt: skip


def add_hostile_client_flags(serve: argparse.ArgumentParser) -> None:
    """Limits that keep one client from taking the server down or starving the others."""
    defaults = ServerConfig()
    add_number(
        serve, "max-classify-tokens", int, defaults.max_classify_tokens,
        "inputs × labels × verbalizer tokens one classify request may score (past it: 413)",
    )  # fmt: skip
    serve.add_argument(
        "--max-client-requests", type=int, default=env_int("max-client-requests", defaults.max_client_requests),
        help="requests (streams included) one client may have in flight, past it 429; a client is its API key, "
        "else its address (default: half of --max-batch-size; 0: no limit; env PROMPTSWAP_MAX_CLIENT_REQUESTS)",
    )  # fmt: skip
    serve.add_argument(
        "--trust-forwarded-for", action="store_true", default=env_switch("trust-forwarded-for"),
        help="take a client's address from the last X-Forwarded-For entry (only behind a proxy that sets it; "
        "env PROMPTSWAP_TRUST_FORWARDED_FOR)",
    )  # fmt: skip
    serve.add_argument(
        "--max-form-mb", type=int, default=env_int("max-form-mb", None),
        help="largest runtime form of one task version on the device, past it the upload gets 413 "
        "(default: a quarter of --device-cache-mb; env PROMPTSWAP_MAX_FORM_MB)",
    )  # fmt: skip
    serve.add_argument(
        "--public-metrics", action="store_true", default=env_switch("public-metrics"),
        help="answer /metrics without a key even when --inference-key is set (env PROMPTSWAP_PUBLIC_METRICS)",
    )  # fmt: skip


def load_model(args: argparse.Namespace, with_tokenizer: bool = True):  # type: ignore[no-untyped-def]
    """The base model (and its tokenizer), and the name clients use for it."""
    from transformers import AutoTokenizer

    from server.engine.default_model import DEFAULT_MODEL_NAME, default_model_dir
    from server.engine.model import ModelConfig, load_base_model

    folder = args.model or str(default_model_dir())
    base = load_base_model(ModelConfig(model=folder, device=args.device, dtype=args.dtype))
    tokenizer = AutoTokenizer.from_pretrained(folder) if with_tokenizer else None
    return base, tokenizer, args.model or DEFAULT_MODEL_NAME


def read_secret(path: str) -> str:
    """A key kept in a file, as compose and Kubernetes mount secrets (one trailing newline allowed)."""
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.read().strip()
    except OSError as error:
        sys.exit(f"promptswap serve: cannot read the admin key file: {error}")
    if not secret:
        sys.exit(f"promptswap serve: the admin key file {path} is empty")
    return secret


def serve_config(args: argparse.Namespace) -> ServerConfig:
    scheduler = SchedulerConfig(
        max_batch_size=args.max_batch_size, max_prefill_tokens=args.max_prefill_tokens, max_waiting=args.max_waiting,
        kv_cache_bytes=args.kv_cache_mb << 20, max_batch_tokens=args.max_batch_tokens or None,
    )  # fmt: skip
    return ServerConfig(
        model=args.model, store=args.store, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
        admin_key=args.admin_key, inference_key=args.inference_key, scheduler=scheduler,
        device_cache_bytes=args.device_cache_mb << 20, shutdown_timeout=args.shutdown_timeout,
        max_upload_bytes=args.max_upload_mb << 20, max_body_bytes=args.max_body_mb << 20,
        max_inputs=args.max_inputs, max_labels=args.max_labels, max_task_labels=args.max_task_labels,
        max_classify_tokens=args.max_classify_tokens, max_client_requests=args.max_client_requests,
        trust_forwarded_for=args.trust_forwarded_for, public_metrics=args.public_metrics,
        max_form_bytes=None if args.max_form_mb is None else args.max_form_mb << 20,
        otlp_endpoint=args.otlp_endpoint, log_content=args.log_content,
    )  # fmt: skip


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a busy port fails at once, and nothing announces
    a server that will never listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        sys.exit(
            f"promptswap serve: cannot listen on {host}:{port}: {error.strerror or error}. "
            "Is another server running there? Stop it, or choose another port with --port."
        )
    return sock


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.api.admission import DrainingServer
    from server.api.app import create_app
    from server.logs import configure as configure_logging

    configure_logging(args.log_level, args.log_format)
    if args.log_format == "json":  # every line a JSON object: no progress bars while the model loads
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if args.admin_key_file:
        args.admin_key = read_secret(args.admin_key_file)
    config = serve_config(args)
    sock = bind(args.host, args.port)
    base, tokenizer, name = load_model(args)
    app = create_app(config, base, tokenizer, name)
    if config.admin_key is None:
        log.warning(
            "no --admin-key: anyone who can reach %s:%d may upload, roll back and delete prompts", args.host, args.port
        )
    log.info("prompts are stored in %s", store_location(config.store or default_store_url()))
    log.info("serving %s on %s (%s) at http://%s:%d", name, base.device, base.dtype, args.host, args.port)
    # After the drain, uvicorn's own shutdown only closes idle connections: give it a second.
    settings = uvicorn.Config(
        app, log_level=args.log_level.lower(), timeout_graceful_shutdown=1, timeout_keep_alive=KEEP_ALIVE_SECONDS,
        log_config=None, access_log=False,  # our handler and format; our access line, with the request id
        proxy_headers=False,  # uvicorn would take X-Forwarded-For from any local peer; --trust-forwarded-for decides
    )  # fmt: skip
    DrainingServer(settings, app.state.admission, config.shutdown_timeout).run(sockets=[sock])
    return 0


def store_location(url: str) -> str:
    """A file store as its directory, a Redis store as its URL without the password."""
    parts = urlparse(url)
    if parts.scheme == "file":
        return parts.path
    return (
        parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
        if parts.hostname
        else url
    )


def check(args: argparse.Namespace) -> int:
    from server.engine.engine import Engine

    base, _, _ = load_model(args, with_tokenizer=False)
    engine = Engine(base)
    failed = 0
    for folder in args.artifacts:
        try:
            artifact = load_artifact_dir(folder, engine.base.spec)
            prompt = engine.build_prompt(artifact)
        except UserError as error:
            failed += 1
            print(json.dumps({"artifact": folder, "error": error.error_type, "message": error.message}))
            continue
        report = {
            "artifact": folder,
            "peft_type": artifact.peft_type,
            "num_virtual_tokens": artifact.num_virtual_tokens,
            "sub_tasks": artifact.num_tasks,
            "sha256": artifact.sha256,
            "runtime_bytes": prompt.nbytes,
        }
        print(json.dumps(report))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "check":
        return check(args)
    from clients.cli import run_client_command

    code = run_client_command(args)
    return 2 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
