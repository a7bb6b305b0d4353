"""Held-out accuracy of the sentiment prompt, scored the way promptswap's /v1/classify scores labels.

    python -m examples.sentiment.evaluate --artifact DIR

Each label is scored by the summed log-probability of its verbalizer tokens after the templated
input; the prediction is the best-scoring label. The same function scores the bare base model and
a PeftModel, so the two numbers printed are directly comparable.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from examples.sentiment.data import LABELS, TEMPLATE, TEST


def verbalizer_log_prob(model: nn.Module, prompt_ids: list[int], verbalizer_ids: list[int]) -> float:
    """Summed log-probability of `verbalizer_ids` following `prompt_ids`."""
    input_ids = torch.tensor([prompt_ids + verbalizer_ids])  # [1, S]
    logits = model(input_ids=input_ids).logits  # [1, V + S, vocab]; V virtual tokens for a prompt-tuned model
    # A prompt-tuned model prepends its virtual tokens, so keep only the positions of the real sequence.
    logits = logits[:, -input_ids.shape[1] :]  # [1, S, vocab]
    log_probs = torch.log_softmax(logits[0].float(), dim=-1)  # [S, vocab]
    start = len(prompt_ids)
    # The token at position t is predicted by the logits at position t - 1.
    targets = torch.tensor(verbalizer_ids)  # [L]
    picked = log_probs[start - 1 : start - 1 + len(verbalizer_ids)].gather(1, targets[:, None])  # [L, 1]
    return picked.sum().item()


@torch.inference_mode()
def score_labels(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    template: str,
    labels: dict[str, str],
) -> list[str]:
    """Predict one label per text: the label whose verbalizer the model finds most likely."""
    model.eval()
    verbalizers = {name: tokenizer(text, add_special_tokens=False).input_ids for name, text in labels.items()}
    predictions = []
    for text in texts:
        prompt_ids = tokenizer(template.format(input=text)).input_ids
        scores = {name: verbalizer_log_prob(model, prompt_ids, ids) for name, ids in verbalizers.items()}
        predictions.append(max(scores, key=scores.__getitem__))
    return predictions


def accuracy(predictions: Sequence[str], gold: Sequence[str]) -> float:
    """Fraction of predictions equal to the gold labels."""
    return sum(p == g for p, g in zip(predictions, gold, strict=True)) / len(gold)


def evaluate(model: nn.Module, tokenizer: PreTrainedTokenizerBase, data: Sequence[tuple[str, str]]) -> float:
    """Accuracy of `model` on `data` with the example's template and labels."""
    texts = [text for text, _ in data]
    gold = [label for _, label in data]
    return accuracy(score_labels(model, tokenizer, texts, TEMPLATE, LABELS), gold)


def main(argv: Sequence[str] | None = None) -> None:
    """Print held-out accuracy of the base model alone and with the trained prompt."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, required=True, help="directory written by examples.sentiment.train")
    args = parser.parse_args(argv)

    # Imported here so `score_labels` can be used without the server package on the path.
    from peft import PeftModel

    from server.engine.default_model import default_model_dir

    folder = default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)

    base_accuracy = evaluate(base, tokenizer, TEST)
    print(f"base model:         {base_accuracy:.1%} on {len(TEST)} held-out reviews")
    tuned = PeftModel.from_pretrained(base, args.artifact)
    tuned_accuracy = evaluate(tuned, tokenizer, TEST)
    print(f"with trained prompt: {tuned_accuracy:.1%} on {len(TEST)} held-out reviews")


if __name__ == "__main__":
    main()
