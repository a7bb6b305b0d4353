"""Loading the base model: any AutoModelForCausalLM from a path, frozen, in the chosen dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.engine.model import ModelConfig, load_base_model, resolve_dtype
from tests.factories import make_model


@pytest.mark.parametrize(("arch", "dtype"), [("llama", "bfloat16"), ("gpt2", "float32"), ("qwen2", "float16")])
def test_load_from_a_path_frozen_in_the_chosen_dtype(tmp_path: Path, arch: str, dtype: str) -> None:
    make_model(arch).save_pretrained(tmp_path)
    base = load_base_model(ModelConfig(model=str(tmp_path), device="cpu", dtype=dtype))
    assert base.dtype == getattr(torch, dtype)
    assert not base.model.training
    assert not any(p.requires_grad for p in base.model.parameters())
    assert base.device == torch.device("cpu")
    spec = base.spec
    assert (spec.hidden_size, spec.vocab_size, spec.max_positions) == (64, 320, 256)
    if arch == "qwen2":
        assert (spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim) == (4, 2, 24)
    if arch == "gpt2":
        assert (spec.num_layers, spec.num_key_value_heads, spec.head_dim) == (3, 4, 16)


def test_auto_dtype_is_float32_on_cpu_and_unknown_names_are_refused() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype: expected auto or one of"):
        resolve_dtype("float8", torch.device("cpu"))
