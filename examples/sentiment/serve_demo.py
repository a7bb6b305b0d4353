"""Upload the trained prompt to a running promptswap server and compare classify accuracy over HTTP.

    promptswap serve &                                   # the embedded SmolLM2
    python -m examples.sentiment.train --out /tmp/sentiment
    python -m examples.sentiment.serve_demo --artifact /tmp/sentiment [--url http://127.0.0.1:8000]

The same held-out sentences are classified twice through /v1/classify: with the task (its
card supplies the template and the labels), and with the base model alone given the same
template and labels. Only the `clients` package is used: no torch on this side.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from clients import Client
from examples.sentiment.data import LABELS, TEMPLATE, TEST


def accuracy(results: list[dict[str, object]], gold: Sequence[str]) -> float:
    return sum(r["label"] == g for r, g in zip(results, gold, strict=True)) / len(gold)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, required=True, help="directory written by examples.sentiment.train")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None, help="the server's admin key, if it has one")
    parser.add_argument("--task", default="sentiment")
    args = parser.parse_args(argv)

    texts, gold = [t for t, _ in TEST], [label for _, label in TEST]
    with Client(args.url, api_key=args.api_key) as client:
        record = client.upload(args.task, args.artifact, card=args.artifact / "card.json")
        done = "already had" if record.get("unchanged") else "uploaded"
        print(f"{done} {args.task} version {record['version']} ({record['peft_type']}, "
              f"{record['num_virtual_tokens']} virtual tokens)")  # fmt: skip
        with_prompt = client.classify(args.task, texts)["results"]
        templated = [TEMPLATE.replace("{input}", text) for text in texts]
        without = client.classify(None, templated, labels=LABELS)["results"]
    print(f"held-out accuracy over HTTP: base model alone {accuracy(without, gold):.0%}, "
          f"with the prompt {accuracy(with_prompt, gold):.0%}  ({len(gold)} sentences)")  # fmt: skip


if __name__ == "__main__":
    main()
