"""Train a PEFT soft prompt for review sentiment on SmolLM2-135M-Instruct, on CPU in a few minutes.

    python -m examples.sentiment.train --out DIR [--steps N] [--virtual-tokens N]

Only the virtual token embeddings are trained; the base model stays frozen. The loss is the causal
LM loss on the verbalizer token alone, which is exactly what /v1/classify compares between labels.
DIR receives the PEFT adapter (adapter_config.json + adapter_model.safetensors) and a card.json
with the template and labels promptswap needs to serve it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel, PromptTuningConfig, PromptTuningInit, get_peft_model
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from examples.sentiment.data import LABELS, TEMPLATE, TRAIN
from server.engine.default_model import default_model_dir

INIT_TEXT = "Decide whether the following review is positive or negative."
IGNORE = -100  # label id that the causal LM loss skips


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; the defaults are the ones measured in the README."""

    out: Path
    steps: int = 60
    num_virtual_tokens: int = 8
    lr: float = 3e-2
    batch_size: int = 8
    init: str = "text"
    seed: int = 0
    log_every: int = 5  # steps the loss shown is averaged over


@dataclass(frozen=True)
class Batch:
    """Right-padded training rows."""

    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, S]
    labels: torch.Tensor  # [B, S]; IGNORE everywhere except the verbalizer tokens


def encode(tokenizer: PreTrainedTokenizerBase, text: str, label: str) -> tuple[list[int], list[int]]:
    """Token ids and labels of one example, tokenized the way /v1/classify tokenizes it."""
    prompt_ids = tokenizer(TEMPLATE.format(input=text)).input_ids
    verbalizer_ids = tokenizer(LABELS[label], add_special_tokens=False).input_ids
    return prompt_ids + verbalizer_ids, [IGNORE] * len(prompt_ids) + verbalizer_ids


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    """Pad rows on the right; padding is masked out of both attention and loss."""
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), pad_id)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        labels[i, : len(ids)] = torch.tensor(row_labels)
    return Batch(input_ids, attention_mask, labels)


def build_model(folder: Path, config: TrainConfig) -> PeftModel:
    """The frozen base model wrapped with a fresh prompt tuning adapter."""
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if config.init == "text":
        init_kwargs = {
            "prompt_tuning_init": PromptTuningInit.TEXT,
            "prompt_tuning_init_text": INIT_TEXT,
            "tokenizer_name_or_path": str(folder),
        }
    else:
        init_kwargs = {"prompt_tuning_init": PromptTuningInit.RANDOM}
    peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens, **init_kwargs)
    return get_peft_model(base, peft_config)


def batches(rows: list[tuple[list[int], list[int]]], config: TrainConfig, pad_id: int) -> list[Batch]:
    """An endless-enough, seeded stream of shuffled batches: one reshuffle per epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    out: list[Batch] = []
    while len(out) < config.steps:
        order = torch.randperm(len(rows), generator=generator).tolist()
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            out.append(collate([rows[i] for i in order[start : start + config.batch_size]], pad_id))
    return out[: config.steps]


def train(model: PeftModel, stream: list[Batch], config: TrainConfig) -> list[float]:
    """AdamW on the virtual token embeddings only; a progress bar shows the step and the loss. Returns the
    loss of each step."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    losses: list[float] = []
    progress = tqdm(stream, desc="training", unit="step", file=sys.stderr)
    for batch in progress:
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        window = losses[-config.log_every :]
        progress.set_postfix(loss=f"{sum(window) / len(window):.4f}")
    return losses


def write_card(out: Path, config: TrainConfig) -> None:
    """card.json: what promptswap needs besides the adapter to serve and classify with it."""
    card = {
        "description": (
            f"Review sentiment (positive/negative): a {config.num_virtual_tokens}-token soft prompt "
            f"for SmolLM2-135M-Instruct trained on {len(TRAIN)} hand-written reviews."
        ),
        "template": TEMPLATE,
        "labels": LABELS,
        # One label word, and generation ends at the line break the model writes after it.
        "defaults": {"max_new_tokens": 2, "temperature": 0.0, "stop": ["\n"]},
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None) -> TrainConfig:
    defaults = TrainConfig(out=Path())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for the adapter and card.json")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    parser.add_argument("--virtual-tokens", type=int, default=defaults.num_virtual_tokens)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--init", choices=["text", "random"], default=defaults.init)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    return TrainConfig(
        out=args.out,
        steps=args.steps,
        num_virtual_tokens=args.virtual_tokens,
        lr=args.lr,
        batch_size=args.batch_size,
        init=args.init,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Train the prompt and write the artifact directory."""
    config = parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    folder = default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = build_model(folder, config)
    model.print_trainable_parameters()
    rows = [encode(tokenizer, text, label) for text, label in TRAIN]
    stream = batches(rows, config, tokenizer.pad_token_id)
    train_started = time.perf_counter()
    losses = train(model, stream, config)
    train_seconds = time.perf_counter() - train_started
    config.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(config.out)
    write_card(config.out, config)
    total_seconds = time.perf_counter() - started
    first, last = (sum(part) / len(part) for part in (losses[: config.log_every], losses[-config.log_every :]))
    print(f"training loss {first:.2f} -> {last:.2f} (mean of the first and last {config.log_every} steps)")
    print(f"training {train_seconds:.1f} s, total {total_seconds:.1f} s; wrote {config.out}")


if __name__ == "__main__":
    main()
