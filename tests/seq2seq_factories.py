"""A tiny random T5 and SEQ_2_SEQ_LM artifacts made by PEFT, plus PEFT's own answer to compare with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from peft import MultitaskPromptTuningConfig, PeftConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
from transformers import AutoModelForSeq2SeqLM, PreTrainedModel, T5Config

from tests.factories import VOCAB, greedy_loop

START_TOKEN_ID = 0  # T5 starts the decoder with its pad token

# PEFT's seq2seq methods, each a function of the number of virtual tokens.
SEQ2SEQ_METHODS: dict[str, Callable[[int], PeftConfig]] = {
    "prompt_tuning": lambda n: PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n),
    "p_tuning_mlp": lambda n: PromptEncoderConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n, encoder_hidden_size=48
    ),
    "p_tuning_lstm": lambda n: PromptEncoderConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n, encoder_hidden_size=48, encoder_reparameterization_type="LSTM"
    ),
    "multitask": lambda n: MultitaskPromptTuningConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n, num_tasks=3, num_ranks=2
    ),
    "prefix": lambda n: PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n),
    "prefix_projection": lambda n: PrefixTuningConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n, prefix_projection=True, encoder_hidden_size=48
    ),
}


def t5_config(**overrides: object) -> T5Config:
    """Three layers each side, so that prefix slots wrap modulo 2L; pads, starts and ends as the tokenizer has them.

    A large `initializer_factor` makes the random model's greedy tokens vary from step to step, so a
    wrong prefix or mask shows up as different tokens and not only as slightly different logits.
    """
    values: dict[str, object] = {
        "vocab_size": VOCAB,
        "d_model": 64,
        "d_kv": 16,
        "d_ff": 128,
        "num_layers": 3,
        "num_decoder_layers": 3,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 20,
        "pad_token_id": 0,
        "decoder_start_token_id": START_TOKEN_ID,
        "eos_token_id": 2,
        "initializer_factor": 3.0,
    }
    return T5Config(**{**values, **overrides})


def make_t5(seed: int = 0, **overrides: object) -> PreTrainedModel:
    torch.manual_seed(seed)
    return AutoModelForSeq2SeqLM.from_config(t5_config(**overrides)).eval()


def peft_forward(
    model: torch.nn.Module, input_ids: list[int], decoder_ids: list[int], task_index: int | None
) -> torch.Tensor:
    """PEFT's `forward` on one request: logits [K, V] (float32) for the K decoder tokens.

    A multitask prompt (`task_index` given) puts virtual tokens before the decoder's tokens too, and
    PEFT then needs the decoder input as embeddings; its logits for those positions are dropped.
    """
    encoder_ids = torch.tensor([input_ids])
    kwargs: dict[str, torch.Tensor] = {"decoder_input_ids": torch.tensor([decoder_ids])}
    if task_index is not None:
        embeds = model.word_embeddings(kwargs.pop("decoder_input_ids"))  # type: ignore[operator]
        kwargs |= {"decoder_inputs_embeds": embeds, "task_ids": torch.tensor([task_index])}
    logits = model(input_ids=encoder_ids, attention_mask=torch.ones_like(encoder_ids), **kwargs).logits[0]
    return logits[-len(decoder_ids) :].float()


@torch.no_grad()
def peft_seq2seq_greedy(
    model: torch.nn.Module,
    input_ids: list[int],
    max_new_tokens: int,
    eos_token_ids: frozenset[int] = frozenset(),
    task_index: int | None = None,
) -> tuple[list[int], torch.Tensor]:
    """PEFT's answer for one request alone: `forward` over the encoder input and the whole decoder sequence
    each step, no cache. Returns the greedy tokens and the first step's logits [V]."""
    return greedy_loop(
        lambda generated: peft_forward(model, input_ids, [START_TOKEN_ID, *generated], task_index)[-1],
        max_new_tokens,
        eos_token_ids,
    )


@torch.no_grad()
def peft_seq2seq_scores(
    model: torch.nn.Module, input_ids: list[int], continuations: Sequence[list[int]], task_index: int | None = None
) -> torch.Tensor:
    """Sum of log-probabilities of each continuation as the decoder's first tokens, from PEFT's `forward`: [C]."""
    scores = []
    for tokens in continuations:
        log_probs = torch.log_softmax(peft_forward(model, input_ids, [START_TOKEN_ID, *tokens[:-1]], task_index), -1)
        scores.append(log_probs[torch.arange(len(tokens)), torch.tensor(tokens)].sum())
    return torch.stack(scores)
