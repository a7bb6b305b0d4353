"""The one module that loads and holds the base model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    PretrainedConfig,
    PreTrainedModel,
)

from prompt_store.spec import ModelSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Bidirectional encoders served as classifiers: the bare encoder with its pooler; each task brings its head.
ENCODER_MODEL_TYPES = frozenset({"bert"})
AUTO_CLASSES = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM, "encoder": AutoModel}


@dataclass(frozen=True)
class ModelConfig:
    """Which model to serve, where, and in what precision."""

    model: str  # local path or hub id
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    gguf_file: str | None = None


@dataclass(frozen=True)
class BaseModel:
    """The frozen model and the facts about it that the rest of the server needs."""

    model: PreTrainedModel
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    eos_token_ids: frozenset[int]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype: expected auto or one of {sorted(DTYPES)}, found {name!r}")
    return DTYPES[name]


def model_kind(config: PretrainedConfig) -> str:
    """causal (any `AutoModelForCausalLM`), seq2seq (T5 family) or encoder (BERT-style classifiers)."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if config.model_type in ENCODER_MODEL_TYPES:
        return "encoder"
    return "causal"


def load_base_model(config: ModelConfig) -> BaseModel:
    """Load the model with the auto class of its kind, frozen and in eval mode."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    extra = {"gguf_file": config.gguf_file} if config.gguf_file else {}
    kind = model_kind(AutoConfig.from_pretrained(config.model, **extra))
    if kind == "encoder":
        model, info = AutoModel.from_pretrained(config.model, dtype=dtype, output_loading_info=True)
        require_pooler(config.model, info["missing_keys"])
    else:
        model = AUTO_CLASSES[kind].from_pretrained(config.model, dtype=dtype, **extra)
    return wrap_model(model, device)


def require_pooler(name: str, missing: set[str]) -> None:
    """A classifier head reads the pooler's output, and PEFT saves the head but never the pooler:
    a checkpoint without pooler weights gets a fresh random one at every load, unlike the one the
    head was trained on, so its tasks cannot be served."""
    absent = sorted(key for key in missing if key.startswith("pooler."))
    if absent:
        raise ValueError(f"{name} has no pooler weights ({', '.join(absent)}); SEQ_CLS heads need the trained pooler")


def wrap_model(model: PreTrainedModel, device: torch.device) -> BaseModel:
    """Freeze an already loaded model and record its spec."""
    model.to(device)  # type: ignore[arg-type]  # transformers' wrapper hides nn.Module.to's signature
    model.eval()
    model.requires_grad_(False)
    return BaseModel(
        model=model,
        spec=model_spec(model.config),
        device=device,
        dtype=model.dtype,
        eos_token_ids=eos_token_ids(model),
    )


def model_spec(config: PretrainedConfig) -> ModelSpec:
    """Shape facts read from a transformers config (GPT-2 style names resolve through attribute_map)."""
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelSpec(
        model_type=text.model_type,
        hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers,
        num_attention_heads=heads,
        num_key_value_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab_size=text.vocab_size,
        max_positions=getattr(text, "max_position_embeddings", None) or 2048,
        kind=model_kind(config),
    )


def eos_token_ids(model: PreTrainedModel) -> frozenset[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)  # encoders have no such config
    if eos is None:
        eos = model.config.get_text_config().eos_token_id
    if eos is None:
        return frozenset()
    return frozenset([eos] if isinstance(eos, int) else eos)
