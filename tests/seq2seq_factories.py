"""A tiny random T5 and SEQ_2_SEQ_LM artifacts made by PEFT, plus PEFT's own answer to compare with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from peft import PeftConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
from transformers import AutoModelForSeq2SeqLM, PreTrainedModel, T5Config

from tests.factories import VOCAB

# PEFT's seq2seq methods, each a function of the number of virtual tokens.
SEQ2SEQ_METHODS: dict[str, Callable[[int], PeftConfig]] = {
    "prompt_tuning": lambda n: PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n),
    "p_tuning_mlp": lambda n: PromptEncoderConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n, encoder_hidden_size=48
    ),
    "p_tuning_lstm": lambda n: PromptEncoderConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n, encoder_hidden_size=48, encoder_reparameterization_type="LSTM"
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
        "decoder_start_token_id": 0,
        "eos_token_id": 2,
        "initializer_factor": 3.0,
    }
    return T5Config(**{**values, **overrides})


def make_t5(seed: int = 0, **overrides: object) -> PreTrainedModel:
    torch.manual_seed(seed)
    return AutoModelForSeq2SeqLM.from_config(t5_config(**overrides)).eval()


@torch.no_grad()
def peft_seq2seq_greedy(
    model: torch.nn.Module, input_ids: list[int], max_new_tokens: int, eos_token_ids: frozenset[int] = frozenset()
) -> tuple[list[int], torch.Tensor]:
    """PEFT's answer for one request alone: `forward` over the encoder input and the whole decoder sequence
    each step, no cache. Returns the greedy tokens and the first step's logits [V]."""
    start = model.config.decoder_start_token_id
    encoder_ids = torch.tensor([input_ids])
    decoded = [start]
    first_logits = None
    for _ in range(max_new_tokens):
        logits = (
            model(
                input_ids=encoder_ids,
                attention_mask=torch.ones_like(encoder_ids),
                decoder_input_ids=torch.tensor([decoded]),
            )
            .logits[0, -1]
            .float()
        )
        if first_logits is None:
            first_logits = logits
        token = int(logits.argmax())
        decoded.append(token)
        if token in eos_token_ids:
            break
    assert first_logits is not None
    return decoded[1:], first_logits


@torch.no_grad()
def peft_seq2seq_scores(
    model: torch.nn.Module, input_ids: list[int], continuations: Sequence[list[int]]
) -> torch.Tensor:
    """Sum of log-probabilities of each continuation as the decoder's first tokens, from PEFT's `forward`: [C]."""
    start = model.config.decoder_start_token_id
    encoder_ids = torch.tensor([input_ids])
    scores = []
    for tokens in continuations:
        decoder_ids = torch.tensor([[start, *tokens[:-1]]])
        logits = model(
            input_ids=encoder_ids, attention_mask=torch.ones_like(encoder_ids), decoder_input_ids=decoder_ids
        )
        log_probs = torch.log_softmax(logits.logits[0].float(), dim=-1)  # [K, V]
        scores.append(log_probs[torch.arange(len(tokens)), torch.tensor(tokens)].sum())
    return torch.stack(scores)
