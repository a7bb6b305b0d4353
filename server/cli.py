"""The `promptswap` command line. Only this module wires the packages together."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from prompt_store.artifact import load_artifact_dir
from prompt_store.errors import UserError
from server.engine.engine import Engine
from server.engine.model import ModelConfig, load_base_model


def env_default(flag: str, default: str | None) -> str | None:
    """Every flag also reads `PROMPTSWAP_<FLAG>`; read here, once, when the parser is built."""
    return os.environ.get(f"PROMPTSWAP_{flag.upper().replace('-', '_')}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptswap", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check", help="validate PEFT artifact directories against a model and report their runtime forms"
    )
    check.add_argument("artifacts", nargs="+", help="directories written by PEFT's save_pretrained")
    check.add_argument("--model", default=env_default("model", None), required=env_default("model", None) is None)
    check.add_argument("--device", default=env_default("device", "auto"))
    check.add_argument("--dtype", default=env_default("dtype", "auto"))
    return parser


def check(args: argparse.Namespace) -> int:
    engine = Engine(load_base_model(ModelConfig(model=args.model, device=args.device, dtype=args.dtype)))
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
    if args.command == "check":
        return check(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
