"""Per-request sampling parameters and one vectorised sampling step for the whole batch.

Each seeded row draws from its own generator, so its tokens do not depend on which other
rows share the batch. Greedy rows (temperature 0) take the argmax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prompt_store.sampling_limits import (
    MAX_LOGIT_BIAS,
    MAX_LOGIT_BIASES,
    MAX_NEW_TOKENS,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_TEMPERATURE,
    sampling_problems,
)
from server.engine.constraints import Constraint
from server.errors import InvalidRequest

# The bounds of every sampling field live in one table (prompt_store.sampling_limits), read by the HTTP
# schemas, the task card's defaults and `SamplingParams.check` alike.
__all__ = ["MAX_NEW_TOKENS", "MAX_TEMPERATURE", "MAX_TOP_K", "MIN_TEMPERATURE", "SamplingParams", "sample"]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_at_eos: bool = True
    logprobs: int | None = None  # report each token's log-probability and this many top tokens; None: none
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    constraint: Constraint | None = None  # what the text must match

    def check(self, vocab_size: int = MAX_TOP_K) -> None:
        """Raise `InvalidRequest` naming the first bad field (`top_k` at most the model's vocabulary)."""
        problems = sampling_problems(dataclasses.asdict(self))
        if problems:
            raise InvalidRequest(problems[0])
        if self.top_k is not None and self.top_k > vocab_size:
            raise InvalidRequest(f"top_k: expected 1..{vocab_size} (the vocabulary), found {self.top_k}")
        if len(self.logit_bias) > MAX_LOGIT_BIASES:
            raise InvalidRequest(f"logit_bias: at most {MAX_LOGIT_BIASES} tokens, found {len(self.logit_bias)}")
        for token_id, bias in self.logit_bias:
            if not 0 <= token_id < vocab_size:
                raise InvalidRequest(f"logit_bias: token id {token_id} is outside the vocabulary (0..{vocab_size - 1})")
            if not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
                bounds = f"{-MAX_LOGIT_BIAS:g}..{MAX_LOGIT_BIAS:g}"
                raise InvalidRequest(f"logit_bias: expected biases in {bounds}, found {bias} for token {token_id}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass
class RowSampler:
    """One row's randomness: a generator seeded from the request (or from the OS)."""

    params: SamplingParams
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator()
        if self.params.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self.params.seed)


def sample(logits: torch.Tensor, rows: Sequence[RowSampler]) -> torch.Tensor:
    """Next token per row. logits: [B, V] float32 -> [B] int64."""
    tokens = logits.argmax(dim=-1)  # [B]
    sampled = [i for i, row in enumerate(rows) if not row.params.is_greedy]
    if not sampled:
        return tokens
    index = torch.tensor(sampled, device=logits.device)
    chosen = logits[index]  # [S, V]
    temperature = torch.tensor([rows[i].params.temperature for i in sampled], device=logits.device)
    probs = torch.softmax(chosen / temperature[:, None], dim=-1)  # [S, V]
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # [S, V]
    keep = torch.ones_like(sorted_probs, dtype=torch.bool)
    ranks = torch.arange(probs.shape[-1], device=logits.device)[None]  # [1, V]
    top_k = torch.tensor([rows[i].params.top_k or probs.shape[-1] for i in sampled], device=logits.device)
    keep &= ranks < top_k[:, None]
    top_p = torch.tensor([rows[i].params.top_p or 1.0 for i in sampled], device=logits.device)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of strictly better tokens
    keep &= mass_before < top_p[:, None]  # the smallest set whose mass reaches top_p
    # The most likely token always stays: a top_p below float32's range (1e-300) rounds to 0 and
    # would otherwise keep nothing, and the draw would land on the least likely token.
    keep[:, 0] = True
    kept = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
    cdf = kept.cumsum(dim=-1)  # [S, V]
    # One uniform draw per row from that row's own generator.
    draws = torch.stack([torch.rand((), generator=rows[i].generator) for i in sampled]).to(logits.device)
    position = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None], right=True)  # [S, 1]
    position = position.clamp(max=probs.shape[-1] - 1)
    tokens[index] = order.gather(-1, position).squeeze(-1)
    return tokens
