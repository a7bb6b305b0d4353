"""Drive a runner by hand through continuous batching: rows leave mid-way and new rows join."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from server.engine.batch import Batch
from server.engine.runner import ModelRunner, PrefillRow
from server.engine.seq2seq import Seq2SeqRunner

FIRST, LEAVING = 6, (1, 3, 4)  # the first six rows start; three of them leave after four tokens


def join_and_leave(
    runner: ModelRunner | Seq2SeqRunner, rows: Sequence[PrefillRow], max_new_tokens: int
) -> dict[int, list[int]]:
    """Greedy tokens per request id: rows[:6] start, 1, 3 and 4 leave after four tokens, the rest join then."""
    produced: dict[int, list[int]] = {row.request_id: [] for row in rows}

    def step(batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        tokens = logits.argmax(-1)  # [B]
        for row, token in enumerate(tokens.tolist()):
            produced[batch.request_ids[row]].append(token)
        return tokens

    batch, logits = runner.prefill(rows[:FIRST])
    for _ in range(3):
        tokens = step(batch, logits)
        batch, logits = runner.decode(batch, tokens)
    tokens = step(batch, logits)
    staying = [i for i in range(FIRST) if i not in LEAVING]
    batch, logits = runner.decode(batch.filter(staying), tokens[staying])
    newcomers, new_logits = runner.prefill(rows[FIRST:])
    batch, logits = type(batch).concatenate([batch, newcomers]), torch.cat([logits, new_logits])
    while len(batch):
        tokens = step(batch, logits)
        keep = [r for r, rid in enumerate(batch.request_ids) if len(produced[rid]) < max_new_tokens]
        if not keep:
            break
        batch, logits = runner.decode(batch.filter(keep), tokens[keep])
    return produced


def assert_join_and_leave(produced: dict[int, list[int]], expected: Sequence[list[int]], label: str) -> None:
    """Rows that stayed or joined got their whole answer; rows that left got its first four tokens."""
    for rid, tokens in enumerate(expected):
        want = tokens[:4] if rid in LEAVING else tokens
        assert produced[rid] == want, f"{label} request {rid}"
