"""Tiny random models and real PEFT artifacts made by PEFT, plus PEFT's own answer to compare with."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import torch
from peft import (
    AdaptionPromptConfig,
    CartridgeConfig,
    CPTConfig,
    MultitaskPromptTuningConfig,
    PeftConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    get_peft_model,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

VOCAB = 320

# Where the engine and PEFT's reference run: cpu here; the GPU script runs the engine's exactness
# tests with PROMPTSWAP_TEST_DEVICE=cuda, so the same comparisons hold on the GPU's kernels.
DEVICE = torch.device(os.environ.get("PROMPTSWAP_TEST_DEVICE", "cpu"))

ARCHITECTURES: dict[str, Callable[[], object]] = {
    # Llama with grouped-query attention (4 query heads share 2 key/value heads).
    "llama": lambda: LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    ),
    # GPT-2: learned absolute positions.
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2
    ),
    # GPT-NeoX: rotary on a quarter of each head only.
    "gpt_neox": lambda: GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        rotary_pct=0.25,
        max_position_embeddings=256,
    ),
    # Mistral with GQA (only the LLaMA-Adapter tests use it: PEFT adapts llama, mistral and gpt2).
    "mistral": lambda: MistralConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    ),
    # Qwen2 with GQA and an explicit head_dim wider than hidden / heads.
    "qwen2": lambda: Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        max_position_embeddings=256,
    ),
}

METHODS: dict[str, Callable[[int], PeftConfig]] = {
    "prompt_tuning": lambda n: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n),
    "p_tuning_mlp": lambda n: PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, encoder_hidden_size=48),
    "p_tuning_lstm": lambda n: PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=n, encoder_hidden_size=48, encoder_reparameterization_type="LSTM"
    ),
    "prefix": lambda n: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n),
    "prefix_projection": lambda n: PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=n, prefix_projection=True, encoder_hidden_size=48
    ),
    "cartridge": lambda n: CartridgeConfig(task_type="CAUSAL_LM", num_virtual_tokens=n),
    "multitask": lambda n: MultitaskPromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=n, num_tasks=3, num_ranks=2
    ),
    "cpt": lambda n: CPTConfig(
        task_type="CAUSAL_LM",
        cpt_token_ids=list(range(5, 5 + n)),
        cpt_mask=[1] * n,
        cpt_tokens_type_mask=[1, 2, 3] * (n // 3) + [4] * (n % 3),
    ),
}


# LLaMA-Adapter: n adapter tokens in the top two layers, or in every layer of the 3-layer models.
ADAPTER_METHODS: dict[str, Callable[[int], PeftConfig]] = {
    "adaption_top2": lambda n: AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=n, adapter_layers=2),
    "adaption_all": lambda n: AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=n, adapter_layers=3),
}


def make_model(arch: str, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(ARCHITECTURES[arch]())
    return model.to(DEVICE).eval()


def make_artifact(base: PreTrainedModel, method: str, num_virtual_tokens: int, folder: Path, seed: int) -> Path:
    """Train nothing, but give every prompt parameter non-trivial random values, then save as PEFT does."""
    config = {**METHODS, **ADAPTER_METHODS}[method](num_virtual_tokens)
    return save_artifact(base, config, folder, seed)


def save_artifact(base: PreTrainedModel, config: PeftConfig, folder: Path, seed: int) -> Path:
    """`make_artifact` for any PEFT config."""
    peft_model = get_peft_model(copy.deepcopy(base), config)
    generator = torch.Generator().manual_seed(seed)
    if config.peft_type == "ADAPTION_PROMPT":  # the prompts and the gates (zero-initialised, hiding the adapter)
        trained = [p for name, p in peft_model.named_parameters() if ".adaption_" in name]
    else:
        trained = list(peft_model.prompt_encoder.parameters())
    with torch.no_grad():
        for parameter in trained:
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            parameter.copy_(noise.to(parameter.dtype) * 0.7)
    peft_model.save_pretrained(folder)
    return folder


def load_peft(base: PreTrainedModel, folder: Path | None) -> torch.nn.Module:
    """PEFT's own model for an artifact (or the base model alone when `folder` is None)."""
    if folder is None:
        return base
    return PeftModel.from_pretrained(copy.deepcopy(base), folder).eval()


@torch.no_grad()
def peft_greedy(
    model: torch.nn.Module,
    input_ids: list[int],
    max_new_tokens: int,
    task_index: int | None = None,
    eos_token_ids: frozenset[int] = frozenset(),
) -> tuple[list[int], torch.Tensor]:
    """PEFT's answer for one request alone: `forward` over the whole sequence each step, no cache.

    Returns the greedy tokens and the first step's logits [V]. (PEFT's `generate` is not used:
    it drops prefix-tuning prefixes on rotary models, see DESIGN.md §1.)
    """
    kwargs = {"task_ids": torch.tensor([task_index], device=DEVICE)} if task_index is not None else {}

    def next_logits(generated: list[int]) -> torch.Tensor:
        ids = torch.tensor([[*input_ids, *generated]], device=DEVICE)
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).logits[0, -1].float()

    return greedy_loop(next_logits, max_new_tokens, eos_token_ids)


def greedy_loop(
    next_logits: Callable[[list[int]], torch.Tensor], max_new_tokens: int, eos_token_ids: frozenset[int]
) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens from `next_logits(tokens so far)` ([V]), and the first step's logits."""
    generated: list[int] = []
    first_logits = None
    for _ in range(max_new_tokens):
        logits = next_logits(generated)
        if first_logits is None:
            first_logits = logits
        generated.append(int(logits.argmax()))
        if generated[-1] in eos_token_ids:
            break
    assert first_logits is not None
    return generated, first_logits


CORPUS = [
    "The film was great, the acting superb and the story moving.",
    "Awful plot; I left early. Never again!",
    "Café crème, naïve façade, résumé — déjà vu.",
    "日本語のテキストも少し。東京は大きい。",
    "Emoji too: 🎬🍿👍 and 🤖 robots 🚀.",
    "Sentiment: positive. Sentiment: negative. Review: fine.",
    "numbers 0123456789 and symbols #@$%^&*()",
]


def make_tokenizer(folder: Path, vocab_size: int = VOCAB) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained here on a small mixed-script corpus, saved into `folder`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)
    return fast
