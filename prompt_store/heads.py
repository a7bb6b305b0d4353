"""The task's own classifier head, saved by PEFT in a `SEQ_CLS` artifact.

PEFT puts the head in `modules_to_save` for sequence classification and writes its weights next
to the prompt. PEFT 0.21.2 names them `base_model.classifier.weight` / `.bias` (BERT's head);
other versions and model families write `classifier.*` or `score.*` (no bias). The number of
labels is the number of rows of the weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prompt_store.errors import ArtifactError, ArtifactMismatch
from prompt_store.records import TaskCard
from prompt_store.spec import ModelSpec

HEAD_MODULES = ("base_model.classifier", "classifier", "base_model.score", "score")
MAX_LABELS = 1000  # as many as a task card may name


@dataclass(frozen=True)
class HeadNames:
    """Where a head's tensors are in the artifact, and how many labels it scores."""

    weight: str
    bias: str | None
    num_labels: int


def find_head(tensors: dict[str, np.ndarray], spec: ModelSpec) -> HeadNames:
    """The one classifier head among `tensors`, checked against the model's hidden size."""
    found = [module for module in HEAD_MODULES if f"{module}.weight" in tensors]
    if len(found) != 1:
        raise ArtifactError(
            "a SEQ_CLS artifact must hold exactly one classifier head "
            f"(one of {[m + '.weight' for m in HEAD_MODULES]}), found {len(found)}; "
            "save it with PEFT's save_pretrained, which writes the head with the prompt"
        )
    module = found[0]
    weight = tensors[f"{module}.weight"]
    if weight.ndim != 2 or weight.shape[1] != spec.hidden_size:
        raise ArtifactMismatch(f"shape of {module}.weight", ["num_labels", spec.hidden_size], list(weight.shape))
    num_labels = weight.shape[0]
    if not 2 <= num_labels <= MAX_LABELS:
        raise ArtifactError(
            f"{module}.weight: expected 2 to {MAX_LABELS} labels (rows), found {num_labels}; "
            "a one-output head is a regression head, which /v1/classify cannot score"
        )
    bias = f"{module}.bias"
    return HeadNames(f"{module}.weight", bias if bias in tensors else None, num_labels)


def head_shapes(head: HeadNames, spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The tensors of the head, with their shapes, to check with the prompt's own."""
    shapes: dict[str, tuple[int, ...]] = {head.weight: (head.num_labels, spec.hidden_size)}
    if head.bias is not None:
        shapes[head.bias] = (head.num_labels,)
    return shapes


def check_card_labels(card: TaskCard | None, num_labels: int | None) -> None:
    """A card that names labels must name one per row of the head."""
    if card is None or card.labels is None or num_labels is None:
        return
    if len(card.labels) != num_labels:
        raise ArtifactMismatch(
            "card.json labels", f"{num_labels} labels", f"{len(card.labels)}", "one per output of the classifier head"
        )
