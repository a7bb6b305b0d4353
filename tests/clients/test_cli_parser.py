"""The client commands of `promptswap`: how arguments are read, and how failures reach the user."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from clients.cli import add_client_commands, parse_labels, run_client_command


def build_parser() -> argparse.ArgumentParser:
    """The same wiring as server/cli.py, without the server's own commands."""
    parser = argparse.ArgumentParser(prog="promptswap")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve")
    add_client_commands(commands)
    return parser


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_flags_come_from_the_environment_when_the_parser_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTSWAP_URL", "http://registry:9000")
    monkeypatch.setenv("PROMPTSWAP_API_KEY", "admin-secret")
    parser = build_parser()
    monkeypatch.delenv("PROMPTSWAP_URL")
    args = parser.parse_args(["prompts", "list"])
    assert (args.url, args.api_key) == ("http://registry:9000", "admin-secret")
    args = parser.parse_args(["prompts", "show", "sentiment", "--url", "http://other:1", "--api-key", "k"])
    assert (args.command, args.prompts_command, args.task, args.url, args.api_key) == (
        "prompts",
        "show",
        "sentiment",
        "http://other:1",
        "k",
    )


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPTSWAP_URL", raising=False)
    monkeypatch.delenv("PROMPTSWAP_API_KEY", raising=False)
    args = build_parser().parse_args(["classify", "--task", "sentiment", "I loved it"])
    assert (args.url, args.api_key) == ("http://127.0.0.1:8000", None)


def test_generate_arguments() -> None:
    args = build_parser().parse_args(
        ["generate", "--task", "t", "--stop", "\n", "The film was", "Awful", "--stop", ".", "--seed", "3", "--stream"]
    )
    assert args.inputs == ["The film was", "Awful"]
    assert (args.stop, args.seed, args.stream, args.temperature) == (["\n", "."], 3, True, None)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["prompts", "upload", "out/dir", "--task", "t", "--card", "card.json"], ("upload", "out/dir", "t")),
        (["prompts", "rollback", "t", "--version", "2"], ("rollback", 2, "t")),
        (["prompts", "delete", "t"], ("delete", "t")),
    ],
)
def test_prompts_subcommands(argv: list[str], expected: tuple[object, ...]) -> None:
    args = build_parser().parse_args(argv)
    fields = {"upload": ("dir", "task"), "rollback": ("version", "task"), "delete": ("task",)}[args.prompts_command]
    assert (args.prompts_command, *(getattr(args, name) for name in fields)) == expected


@pytest.mark.parametrize(
    ("values", "labels"),
    [
        (None, None),
        (["positive", "negative"], ["positive", "negative"]),
        (["pos= positive", "neg= negative"], {"pos": " positive", "neg": " negative"}),
        (["a=b", "plain"], ["a=b", "plain"]),
    ],
)
def test_labels(values: list[str] | None, labels: object) -> None:
    assert parse_labels(values) == labels


def test_other_commands_are_not_ours() -> None:
    assert run_client_command(build_parser().parse_args(["serve"])) is None


def test_unreachable_server_is_one_line_naming_the_url_and_how_to_start_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    args = build_parser().parse_args(["prompts", "list", "--url", url])
    assert run_client_command(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: no_server: nothing answers at {url} ") and captured.err.count("\n") == 1
    assert "`promptswap serve`" in captured.err and "--url" in captured.err


def test_pickle_only_upload_fails_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    url = f"http://127.0.0.1:{closed_port()}"
    args = build_parser().parse_args(["prompts", "upload", str(tmp_path), "--task", "t", "--url", url])
    assert run_client_command(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ValueError: ") and "safe_serialization=True" in err
