"""Encoder classifiers: how closely one mixed batch matches PEFT alone, and what batching buys.

    python -m bench.encoder_exactness [--rows 32]

On the real MiniLM and on a tiny random BERT, SEQ_CLS tasks of four methods with 2 and 3 labels
(random prompts and heads, made by PEFT) classify `--rows` texts in one mixed batch. Prints, per
method, the largest difference of a probability and of a logit from PEFT's `forward` on each
request alone (float32), and the time of the mixed batch against the same rows one by one
(a ratio; best of 3 each).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from prompt_store.artifact import load_artifact_dir
from server.engine.engine import Engine, Request
from server.engine.model import ModelConfig, load_base_model
from tests.encoder_factories import (
    load_classifier,
    load_peft_classifier,
    make_seq_cls_artifact,
    make_tiny_bert,
    minilm_dir,
    peft_logits,
)

TASKS = {"prompt_tuning": (8, 2), "p_tuning": (6, 3), "prefix": (10, 3), "p_tuning_v2": (12, 2)}
WORDS = [
    "the",
    "film",
    "was",
    "great",
    "awful",
    "plot",
    "never",
    "again",
    "acting",
    "superb",
    "story",
    "moving",
    "left",
    "early",
    "fine",
]


def best_of(runs: int, job: object) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        job()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, model_dir: Path, folder: Path, num_rows: int) -> None:
    engine = Engine(load_base_model(ModelConfig(str(model_dir), device="cpu", dtype="float32")))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    classifiers = {labels: load_classifier(model_dir, labels) for labels in (2, 3)}
    prompts, references = {}, {}
    for seed, (method, (n, labels)) in enumerate(TASKS.items()):
        artifact = make_seq_cls_artifact(classifiers[labels], method, n, folder / name / method, seed=seed + 1)
        prompts[method] = engine.build_prompt(load_artifact_dir(artifact, engine.base.spec))
        references[method] = load_peft_classifier(classifiers[labels], artifact)
    methods = list(TASKS)
    rows = []
    for row in range(num_rows):
        text = " ".join(WORDS[(row * 7 + k) % len(WORDS)] for k in range(3 + row % 17))
        rows.append((methods[row % len(methods)], list(tokenizer(text)["input_ids"])))
    requests = [Request(ids, prompts[method]) for method, ids in rows]
    served = engine.classify(requests)
    worst: dict[str, tuple[float, float]] = {}
    for (method, ids), logits in zip(rows, served, strict=True):
        expected = peft_logits(references[method], ids)
        dp = float((torch.softmax(logits, -1) - torch.softmax(expected, -1)).abs().max())
        dl = float((logits - expected).abs().max())
        old = worst.get(method, (0.0, 0.0))
        worst[method] = (max(old[0], dp), max(old[1], dl))
    for method, (dp, dl) in worst.items():
        print(f"{name:10s} {method:14s} max|Δp| {dp:.1e}  max|Δlogit| {dl:.1e}")
    batched = best_of(3, lambda: engine.classify(requests))
    alone = best_of(3, lambda: [engine.classify([r]) for r in requests])
    print(f"{name:10s} {num_rows} rows: one mixed batch {batched * 1e3:.0f} ms, one by one {alone * 1e3:.0f} ms, "
          f"ratio {alone / batched:.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=32)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        measure("tiny_bert", make_tiny_bert(folder / "tiny"), folder, args.rows)
        measure("minilm", minilm_dir(), folder, args.rows)


if __name__ == "__main__":
    main()
