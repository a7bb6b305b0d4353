"""Per-request sampling parameters and one vectorised sampling step for the whole batch.

Each seeded row draws from its own generator, so its tokens do not depend on which other
rows share the batch. Greedy rows (temperature 0) take the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from server.errors import InvalidRequest

MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_at_eos: bool = True

    def check(self) -> None:
        """Raise `InvalidRequest` naming the first bad field."""
        if self.max_new_tokens < 1:
            raise InvalidRequest(f"max_new_tokens: expected at least 1, found {self.max_new_tokens}")
        if not 0.0 <= self.temperature <= 100.0:
            raise InvalidRequest(f"temperature: expected 0..100, found {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise InvalidRequest(f"top_k: expected at least 1, found {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest(f"top_p: expected a value in (0, 1], found {self.top_p}")
        if len(self.stop) > MAX_STOP_STRINGS or any(not s or len(s) > MAX_STOP_LENGTH for s in self.stop):
            raise InvalidRequest(
                f"stop: expected at most {MAX_STOP_STRINGS} non-empty strings of up to {MAX_STOP_LENGTH} characters"
            )

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
    keep &= mass_before < top_p[:, None]  # the smallest set whose mass reaches top_p (always >= 1 token)
    kept = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
    cdf = kept.cumsum(dim=-1)  # [S, V]
    # One uniform draw per row from that row's own generator.
    draws = torch.stack([torch.rand((), generator=rows[i].generator) for i in sampled]).to(logits.device)
    position = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None], right=True)  # [S, 1]
    position = position.clamp(max=probs.shape[-1] - 1)
    tokens[index] = order.gather(-1, position).squeeze(-1)
    return tokens
