"""SEQ_CLS artifacts on an encoder carry their classifier head; a missing or misfit head, or a card whose
labels do not match it, is refused with a typed error before anything is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save
from transformers import BertConfig, BertForSequenceClassification

from prompt_store.artifact import parse_artifact
from prompt_store.errors import ArtifactError, ArtifactMismatch
from prompt_store.heads import check_card_labels
from prompt_store.records import TaskCard
from prompt_store.spec import ModelSpec
from server.engine.model import model_spec
from tests.encoder_factories import make_seq_cls_artifact

HEAD = ("base_model.classifier.weight", "base_model.classifier.bias")  # as PEFT 0.21.2 names them


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, dict[str, Path]]:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=3
    )
    classifier = BertForSequenceClassification(config).eval()
    root = tmp_path_factory.mktemp("seq-cls")
    folders = {
        method: make_seq_cls_artifact(classifier, method, 4, root / method, seed=2)
        for method in ("prompt_tuning", "prefix")
    }
    return model_spec(classifier.bert.config), folders


def parse(folder: Path, spec: ModelSpec, tensors: dict[str, torch.Tensor] | None = None):
    weights = save(tensors) if tensors is not None else (folder / "adapter_model.safetensors").read_bytes()
    return parse_artifact((folder / "adapter_config.json").read_bytes(), weights, spec)


def test_peft_writes_the_head_and_the_artifact_knows_its_labels(bert) -> None:
    spec, folders = bert
    assert spec.kind == "encoder"
    for folder in folders.values():
        artifact = parse(folder, spec)
        assert set(HEAD) <= set(artifact.tensors)
        assert artifact.num_labels == 3


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda t: {k: v for k, v in t.items() if not k.startswith("base_model.")}, ArtifactError, "classifier head"),
        (lambda t: {**t, HEAD[0]: torch.zeros(3, 8)}, ArtifactMismatch, "base_model.classifier.weight"),
        (lambda t: {**t, HEAD[0]: torch.zeros(1, 16), HEAD[1]: torch.zeros(1)}, ArtifactError, "regression"),
        (lambda t: {**t, HEAD[1]: torch.zeros(2)}, ArtifactMismatch, "base_model.classifier.bias"),
        (lambda t: {**t, "classifier.weight": torch.zeros(3, 16)}, ArtifactError, "exactly one classifier head"),
        (lambda t: {**t, HEAD[0]: torch.full((3, 16), float("nan"))}, ArtifactError, "NaN"),
    ],
)
def test_bad_heads_are_refused(bert, change, error, message) -> None:
    spec, folders = bert
    for folder in folders.values():
        tensors = change(load_file(folder / "adapter_model.safetensors"))
        with pytest.raises(error, match=message):
            parse(folder, spec, tensors)


@pytest.mark.parametrize(
    ("labels", "num_labels", "fits"),
    [
        (["a", "b", "c"], 3, True),
        ({"a": " x", "b": " y"}, 2, True),
        (["a", "b"], 3, False),
        ({"a": " x", "b": " y", "c": " z"}, 2, False),
        (None, 3, True),  # no names: LABEL_i
        (["a", "b"], None, True),  # a language model's verbalizer labels, any number
    ],
)
def test_card_labels_must_match_the_head(labels, num_labels: int | None, fits: bool) -> None:
    card = TaskCard(labels=labels)
    if fits:
        check_card_labels(card, num_labels)
    else:
        with pytest.raises(ArtifactMismatch, match="card.json labels"):
            check_card_labels(card, num_labels)
