"""What one step does to its rows' next-token logits around the draw.

Before the draw, in order: the log-softmax of the model's own logits is kept for the rows that report
log-probabilities (so they are what the model gave, before anything below, as OpenAI and vLLM report
them); each row's logit biases and presence/frequency penalties (over the tokens it has generated) are
added; each constrained row's grammar masks every token that would leave it. The draw
(`sampling.sample`) then sees the adjusted logits. After the draw, `TokenLogprob`s are read off the
kept log-softmax for the sampled tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import llguidance
import torch

from server.engine.constraints import mask_logits
from server.engine.sampling import SamplingParams


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability, and the most likely tokens at its step (best first)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class RowState:
    """What the adjustments read of one row: its parameters, its tokens so far, its grammar's matcher."""

    params: SamplingParams
    generated: Sequence[int]
    matcher: llguidance.LLMatcher | None = None


def adjust(logits: torch.Tensor, rows: Sequence[RowState]) -> torch.Tensor | None:
    """Adjust `logits` [B, V] (float32) in place; return the log-softmax [B, V] of the logits as the model
    gave them when some row reports log-probabilities (None otherwise)."""
    log_probs = None
    if any(row.params.logprobs is not None for row in rows):
        log_probs = torch.log_softmax(logits, dim=-1)
    for i, row in enumerate(rows):
        params = row.params
        if params.logit_bias:
            ids, biases = zip(*params.logit_bias, strict=True)
            logits[i, list(ids)] += torch.tensor(biases, dtype=logits.dtype, device=logits.device)
        if (params.presence_penalty or params.frequency_penalty) and row.generated:
            counts = torch.bincount(torch.tensor(list(row.generated)), minlength=logits.shape[-1])
            counts = counts[: logits.shape[-1]].to(logits.device, logits.dtype)
            logits[i] -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(logits.dtype)
    mask_logits(logits, [row.matcher for row in rows])
    return log_probs


def token_logprobs(
    log_probs: torch.Tensor | None, rows: Sequence[RowState], tokens: Sequence[int]
) -> list[TokenLogprob | None]:
    """Each sampled token's log-probability and its step's top tokens, for the rows that report them."""
    if log_probs is None:
        return [None] * len(rows)
    wanted = [row.params.logprobs for row in rows]
    top = max((count for count in wanted if count is not None), default=0)
    best_values, best_ids = log_probs.topk(top, dim=-1) if top else (None, None)
    picked = log_probs.gather(-1, torch.tensor(list(tokens), device=log_probs.device)[:, None])[:, 0].tolist()
    results: list[TokenLogprob | None] = []
    for i, count in enumerate(wanted):
        if count is None:
            results.append(None)
            continue
        ranked: tuple[tuple[int, float], ...] = ()
        if count and best_ids is not None and best_values is not None:
            ids, values = best_ids[i, :count].tolist(), best_values[i, :count].tolist()
            ranked = tuple(zip(ids, values, strict=True))
        results.append(TokenLogprob(tokens[i], picked[i], ranked))
    return results
