"""The models the benchmarks run: SmolLM2-135M-Instruct (real, offline) and random Llamas of chosen sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel, PreTrainedTokenizerFast

from bench.config import LlamaShape
from server.engine.default_model import default_model_dir

# A few sentences to train the random Llamas' byte-level tokenizer on (the server needs a tokenizer).
TEXT = [
    "The film was great, the acting superb and the story moving.",
    "Awful plot; I left early. Never again! Numbers 0123456789.",
    "Serve many soft prompts from one frozen base model, in mixed batches.",
]


def random_llama(shape: LlamaShape, seed: int = 0) -> PreTrainedModel:
    config = LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def byte_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `TEXT`, with at most `vocab_size` tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab_size, 400),
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TEXT * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def random_llama_dir(shape: LlamaShape, folder: Path) -> Path:
    """Save a random Llama and its tokenizer where `promptswap serve --model` can load them."""
    random_llama(shape).save_pretrained(folder)
    byte_tokenizer(shape.vocab_size).save_pretrained(folder)
    return folder


def model_dir(real: bool, shape: LlamaShape, scratch: Path) -> Path:
    """The served model's directory: the converted SmolLM2 in the user cache, or a random Llama in `scratch`."""
    return default_model_dir() if real else random_llama_dir(shape, scratch / "model")


def load(folder: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, Any]:
    """The model (on the CPU until the engine moves it) and its tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(folder)
