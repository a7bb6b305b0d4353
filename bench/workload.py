"""Requests the suites replay: random token ids of chosen lengths, Poisson arrivals, Zipf task popularity."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from server.engine.engine import Request
from server.engine.sampling import SamplingParams
from server.prompts.forms import TaskPrompt

FIRST_ID = 3  # skip the usual pad / bos / eos ids


@dataclass(frozen=True)
class Shape:
    """One request before a task is attached: its input ids and how many tokens it generates."""

    input_ids: tuple[int, ...]
    new_tokens: int

    def request(self, prompt: TaskPrompt | None) -> Request:
        # EOS is ignored so every run generates exactly `new_tokens`, whatever the model says.
        params = SamplingParams(max_new_tokens=self.new_tokens, stop_at_eos=False)
        return Request(self.input_ids, prompt=prompt, params=params)


def shapes(
    count: int, input_tokens: tuple[int, int], output_tokens: tuple[int, int], vocab: int, seed: int = 0
) -> list[Shape]:
    rng = random.Random(seed)
    return [
        Shape(
            tuple(rng.randrange(FIRST_ID, vocab) for _ in range(rng.randint(*input_tokens))),
            rng.randint(*output_tokens),
        )
        for _ in range(count)
    ]


def poisson_gaps(count: int, rate: float, seed: int = 0) -> list[float]:
    """Seconds between arrivals of a Poisson process with `rate` arrivals per second."""
    rng = random.Random(seed)
    return [rng.expovariate(rate) for _ in range(count)]


def zipf_choices(count: int, num_items: int, exponent: float = 1.0, seed: int = 0) -> list[int]:
    """`count` draws from items 0..num_items-1 with probability proportional to 1 / (rank + 1) ** exponent."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** exponent for rank in range(num_items)]
    return rng.choices(range(num_items), weights=weights, k=count)


def tokens_of(requests: Sequence[Request]) -> int:
    return sum(r.params.max_new_tokens for r in requests)
