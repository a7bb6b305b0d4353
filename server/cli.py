"""The `promptswap` command line. Only this module wires the packages together.

`serve` and `check` load the model here; the client commands (`prompts`, `generate`,
`classify`) live in `clients.cli` and need no torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from prompt_store.artifact import load_artifact_dir
from prompt_store.errors import UserError
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


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=env_default("model", None), help="path or hub id (default: SmolLM2-135M)")
    parser.add_argument("--device", default=env_default("device", "auto"), help="auto | cpu | cuda")
    parser.add_argument("--dtype", default=env_default("dtype", "auto"), help="auto | float32 | bfloat16 | float16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptswap", description="Serve PEFT soft prompts from one base model.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    add_model_flags(serve)
    serve.add_argument("--store", default=env_default("store", None), help="file:///DIR or redis://HOST:PORT/DB")
    serve.add_argument("--host", default=env_default("host", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(env_default("port", "8000") or 8000))
    serve.add_argument("--admin-key", default=env_default("admin-key", None), help="required for registry writes")
    serve.add_argument(
        "--admin-key-file", default=env_default("admin-key-file", None),
        help="read the admin key from this file (a container secret) instead",
    )  # fmt: skip
    serve.add_argument("--inference-key", default=env_default("inference-key", None), help="required for inference")
    serve.add_argument("--max-batch-size", type=int, default=int(env_default("max-batch-size", "32") or 32))
    serve.add_argument(
        "--kv-cache-mb", type=int, default=int(env_default("kv-cache-mb", "2048") or 2048),
        help="memory for the running rows' keys and values, allocated once (task prefixes are in the device cache)",
    )  # fmt: skip
    serve.add_argument(
        "--max-prefill-tokens", type=int, default=int(env_default("max-prefill-tokens", "4096") or 4096),
        help="prompt tokens one step prefills; longer prompts are prefilled in chunks while other rows decode",
    )  # fmt: skip
    serve.add_argument(
        "--max-waiting", type=int, default=int(env_default("max-waiting", "256") or 256),
        help="requests that may wait for a batch slot; past it requests get 429",
    )  # fmt: skip
    serve.add_argument("--device-cache-mb", type=int, default=int(env_default("device-cache-mb", "2048") or 2048))
    serve.add_argument(
        "--shutdown-timeout", type=float, default=float(env_default("shutdown-timeout", "30") or 30),
        help="seconds running requests get to finish after SIGTERM (new ones get 503 meanwhile)",
    )  # fmt: skip
    serve.add_argument(
        "--max-upload-mb", type=int, default=int(env_default("max-upload-mb", "256") or 256), help="per artifact file"
    )
    serve.add_argument("--log-level", default=env_default("log-level", "info"))
    add_hostile_client_flags(serve)

    check = commands.add_parser("check", help="validate PEFT artifact directories against a model")
    check.add_argument("artifacts", nargs="+", help="directories written by PEFT's save_pretrained")
    add_model_flags(check)

    from clients.cli import add_client_commands

    add_client_commands(commands)
    return parser


def add_hostile_client_flags(serve: argparse.ArgumentParser) -> None:
    """Limits that keep one client from taking the server down or starving the others."""
    defaults = ServerConfig()
    serve.add_argument(
        "--max-classify-tokens", type=int, default=env_int("max-classify-tokens", defaults.max_classify_tokens),
        help="inputs × labels × verbalizer tokens one classify request may score (past it: 413)",
    )  # fmt: skip
    serve.add_argument(
        "--max-client-requests", type=int, default=env_int("max-client-requests", defaults.max_client_requests),
        help="requests (streams included) one client may have in flight, past it 429; a client is its API key, "
        "else its address (default: half of --max-batch-size; 0: no limit)",
    )  # fmt: skip
    serve.add_argument(
        "--trust-forwarded-for", action="store_true", default=env_switch("trust-forwarded-for"),
        help="take a client's address from the last X-Forwarded-For entry (only behind a proxy that sets it)",
    )  # fmt: skip
    serve.add_argument(
        "--max-form-mb", type=int, default=env_int("max-form-mb", None),
        help="largest runtime form of one task version on the device, past it the upload gets 413 "
        "(default: a quarter of --device-cache-mb)",
    )  # fmt: skip
    serve.add_argument(
        "--public-metrics", action="store_true", default=env_switch("public-metrics"),
        help="answer /metrics without a key even when --inference-key is set",
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


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.api.admission import DrainingServer
    from server.api.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.admin_key_file:
        args.admin_key = read_secret(args.admin_key_file)
    scheduler = SchedulerConfig(
        max_batch_size=args.max_batch_size, max_prefill_tokens=args.max_prefill_tokens, max_waiting=args.max_waiting,
        kv_cache_bytes=args.kv_cache_mb << 20,
    )  # fmt: skip
    config = ServerConfig(
        model=args.model, store=args.store, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
        admin_key=args.admin_key, inference_key=args.inference_key, scheduler=scheduler,
        device_cache_bytes=args.device_cache_mb << 20, shutdown_timeout=args.shutdown_timeout,
        max_upload_bytes=args.max_upload_mb << 20,
        max_classify_tokens=args.max_classify_tokens, max_client_requests=args.max_client_requests,
        trust_forwarded_for=args.trust_forwarded_for, public_metrics=args.public_metrics,
        max_form_bytes=None if args.max_form_mb is None else args.max_form_mb << 20,
    )  # fmt: skip
    base, tokenizer, name = load_model(args)
    if config.admin_key is None:
        log.warning(
            "no --admin-key: anyone who can reach %s:%d may upload, roll back and delete prompts", args.host, args.port
        )
    log.info("serving %s on %s (%s) at http://%s:%d", name, base.device, base.dtype, args.host, args.port)
    app = create_app(config, base, tokenizer, name)
    # After the drain, uvicorn's own shutdown only closes idle connections: give it a second.
    settings = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level.lower(), timeout_graceful_shutdown=1,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        proxy_headers=False,  # uvicorn would take X-Forwarded-For from any local peer; --trust-forwarded-for decides
    )  # fmt: skip
    DrainingServer(settings, app.state.admission, config.shutdown_timeout).run()
    return 0


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
