"""The client half of the `promptswap` command line: `prompts ...`, `generate` and `classify`, over HTTP.

No torch here: server/cli.py adds these commands to its parser and hands them back to `run_client_command`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

import httpx

from clients.client import DEFAULT_URL, Client, GenerateOptions, Labels
from clients.errors import PromptswapError
from clients.multipart import card_to_send

COMMANDS = ("prompts", "generate", "classify")

if TYPE_CHECKING:  # argparse's class is generic only in the type stubs
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def connection_flags() -> argparse.ArgumentParser:
    """`--url` and `--api-key` for every client command; the environment is read now, when the parser is built."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--url", default=os.environ.get("PROMPTSWAP_URL", DEFAULT_URL), help="server address")
    flags.add_argument(
        "--api-key", default=os.environ.get("PROMPTSWAP_API_KEY"), help="sent as Authorization: Bearer KEY"
    )
    return flags


def add_client_commands(commands: SubParsers) -> None:
    """Add `prompts`, `generate` and `classify` to the top-level subparsers (whose dest is `command`)."""
    flags = connection_flags()
    add_prompts_commands(commands, flags)
    add_generate_command(commands, flags)
    add_classify_command(commands, flags)


def add_prompts_commands(commands: SubParsers, flags: argparse.ArgumentParser) -> None:
    prompts = commands.add_parser("prompts", help="manage the prompt registry of a running server")
    actions = prompts.add_subparsers(dest="prompts_command", required=True)
    upload = actions.add_parser("upload", parents=[flags], help="upload a PEFT folder as the next version of a task")
    upload.add_argument("dir", help="a folder written by PEFT's save_pretrained (safetensors)")
    upload.add_argument("--task", required=True, help="task name")
    card = upload.add_mutually_exclusive_group()
    card.add_argument("--card", help="task card JSON: template, labels, defaults (default: the folder's card.json)")
    card.add_argument("--no-card", action="store_true", help="send no card, even if the folder has a card.json")
    listing = actions.add_parser("list", parents=[flags], help="list tasks and their current versions (a table)")
    listing.add_argument("--json", action="store_true", help="print the server's records as JSON, for scripts")
    actions.add_parser("show", parents=[flags], help="show a task and its versions").add_argument("task")
    actions.add_parser("delete", parents=[flags], help="delete a task and all its versions").add_argument("task")
    rollback = actions.add_parser("rollback", parents=[flags], help="make an earlier version current")
    rollback.add_argument("task")
    rollback.add_argument("--version", type=int, required=True)


def add_generate_command(commands: SubParsers, flags: argparse.ArgumentParser) -> None:
    generate = commands.add_parser("generate", parents=[flags], help="generate text, one line per input")
    generate.add_argument("inputs", nargs="+", metavar="INPUT")
    generate.add_argument("--task", help="task name (default: the base model alone)")
    generate.add_argument("--version", type=int, help="pin a version (default: current)")
    generate.add_argument("--max-new-tokens", type=int)
    generate.add_argument("--temperature", type=float, help="0 is greedy")
    generate.add_argument("--top-k", type=int)
    generate.add_argument("--top-p", type=float)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--stop", action="append", metavar="STR", help="stop string (repeat for more)")
    generate.add_argument("--stream", action="store_true", help="print text as it is generated")


def add_classify_command(commands: SubParsers, flags: argparse.ArgumentParser) -> None:
    classify = commands.add_parser("classify", parents=[flags], help="score each input against labels")
    classify.add_argument("inputs", nargs="+", metavar="INPUT")
    classify.add_argument("--task", required=True, help="task name")
    classify.add_argument("--version", type=int, help="pin a version (default: current)")
    classify.add_argument(
        "--labels", nargs="+", metavar="LABEL", help="labels (default: the task card's); LABEL=TEXT sets a verbalizer"
    )


def run_client_command(args: argparse.Namespace) -> int | None:
    """Run a client command and return its exit code; None when `args.command` is not one of ours."""
    if args.command not in COMMANDS:
        return None
    try:
        with Client(args.url, args.api_key) as client:
            return dispatch(client, args)
    except PromptswapError as error:
        return fail(error.error_type, error.message)
    except httpx.ConnectError as error:
        return fail(
            "no_server",
            f"nothing answers at {args.url} ({error}). Start a server there with `promptswap serve`, "
            "or point --url (or PROMPTSWAP_URL) at the one you have.",
        )
    except httpx.HTTPError as error:
        return fail(type(error).__name__, str(error))
    except (OSError, ValueError) as error:  # local problems: a missing folder, a pickle-only artifact, a bad card
        return fail(type(error).__name__, str(error))


def fail(error_type: str, message: str) -> int:
    print(f"error: {error_type}: {message}", file=sys.stderr)
    return 1


def dispatch(client: Client, args: argparse.Namespace) -> int:
    if args.command == "generate":
        return generate(client, args)
    if args.command == "classify":
        result = client.classify(args.task, args.inputs, parse_labels(args.labels), version=args.version)
        return print_json(result)
    return run_prompts_command(client, args)


def run_prompts_command(client: Client, args: argparse.Namespace) -> int:
    action = args.prompts_command
    if action == "upload":
        return upload(client, args)
    if action == "list":
        prompts = client.list_prompts()
        return print_json(prompts) if args.json else print_table(prompts)
    if action == "show":
        return print_json(client.show(args.task))
    if action == "delete":
        client.delete(args.task)
        return print_json({"task": args.task, "deleted": True})
    return print_json(client.rollback(args.task, args.version))


def upload(client: Client, args: argparse.Namespace) -> int:
    """Upload; then say on stderr which card went with it and whether a version was made."""
    card = card_to_send(args.dir, args.card, folder_card=not args.no_card)
    record = client.upload(args.task, args.dir, card, ProgressBar(), folder_card=False)
    if card is None:
        print(f"card: none ({args.dir} has no card.json; --card FILE sends one)", file=sys.stderr)
    else:
        print(f"card: {card}", file=sys.stderr)
    if record.get("unchanged"):
        print(f"unchanged: version {record['version']} of {args.task} has these files and card", file=sys.stderr)
    else:
        print(f"created version {record['version']} of {args.task}", file=sys.stderr)
    return print_json(record)


def generate(client: Client, args: argparse.Namespace) -> int:
    options = generate_options(args)
    if not args.stream:
        for output in client.generate(args.task, args.inputs, **options)["outputs"]:
            print(output["text"])
        return 0
    # One request per input, so that each line streams whole instead of interleaving rows.
    for text in args.inputs:
        for event in client.stream(args.task, text, **options):
            sys.stdout.write(event.get("text", ""))
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0


def generate_options(args: argparse.Namespace) -> GenerateOptions:
    return GenerateOptions(
        version=args.version,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop,
    )


def parse_labels(values: list[str] | None) -> Labels | None:
    """`a b` is a list of labels; `a=TEXT b=TEXT` maps each label to its verbalizer text."""
    if not values:
        return None
    if all("=" in value for value in values):
        return {label: text for label, _, text in (value.partition("=") for value in values)}
    return values


TABLE = (
    ("TASK", lambda p: p["task"]),
    ("VERSION", lambda p: str(p["current_version"])),
    ("METHOD", lambda p: p["peft_type"]),
    ("VIRTUAL TOKENS", lambda p: str(p["num_virtual_tokens"])),
    ("SIZE", lambda p: human_size(p.get("nbytes", 0))),
    ("UPDATED", lambda p: time.strftime("%Y-%m-%d %H:%M", time.localtime(p.get("created_at", 0)))),
)


def print_table(prompts: list[dict[str, Any]]) -> int:
    """One line per task, in aligned columns; UPDATED is when its current version was created (local time)."""
    if not prompts:
        print("no tasks yet: `promptswap prompts upload DIR --task NAME` adds one", file=sys.stderr)
        return 0
    rows = [[name for name, _ in TABLE], *([cell(p) for _, cell in TABLE] for p in prompts)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE))]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
    return 0


def human_size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{nbytes} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def print_json(result: Any) -> int:
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


class ProgressBar:
    """A `progress(sent, total)` callback drawing a text bar on stderr, redrawn in place with `\\r`."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._shown = -1

    def __call__(self, sent: int, total: int) -> None:
        percent = 100 if total <= 0 else sent * 100 // total
        if percent == self._shown:  # redraw only when the bar changes, not for every 64 KiB chunk
            return
        self._shown = percent
        filled = self.width * percent // 100
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\rupload [{bar}] {percent:3d}% {sizes(sent, total)}")
        if sent >= total:
            self.stream.write("\n")
        self.stream.flush()


def sizes(sent: int, total: int) -> str:
    """`sent/total` in the unit that suits the total: KiB below a MiB, MiB above."""
    unit, scale = ("MiB", 1 << 20) if total >= 1 << 20 else ("KiB", 1 << 10)
    return f"{sent / scale:.1f}/{total / scale:.1f} {unit}"
