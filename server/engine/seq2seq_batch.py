"""A running encoder-decoder batch: each row's encoder output, kept for cross-attention, and its decoder state.

T5 places its relative position bias by column (query column minus key column), not by explicit
position ids, so each row must keep the column distances it has alone. Both halves are left-padded:
padding in front shifts every column of a row alike, and pads are masked out.

Decoder layout per row: [pads][decoder prefix][decoder tokens]. All rows of a prefill start their
decoder tokens at one column (prefixes right-aligned before it), so decode steps append one column
for every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from server.engine.kv_cache import KVState


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zeros in front of `tensor` along `dim` so that it has `length` there."""
    extra = length - tensor.shape[dim]
    if extra == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = extra
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _first_used_column(mask: torch.Tensor) -> int:
    """The first column of `mask` ([B, S]) that is real in some row."""
    used = mask.any(dim=0).nonzero()
    return int(used[0]) if len(used) else 0


@dataclass(frozen=True)
class Seq2SeqBatch:
    """The decoder side (`kv` is its self-attention state, left-padded) and the encoder's, row by row.

    `next_positions` counts each row's decoder prefix and tokens so far; T5 takes no position ids.
    """

    request_ids: tuple[int, ...]  # [B] the engine's sequence ids, in row order
    kv: KVState  # per decoder layer [B, H, S, hd]
    attention_mask: torch.Tensor  # [B, S] int64, 1 = real decoder position
    next_positions: torch.Tensor  # [B] int64
    encoder_states: torch.Tensor  # [B, E, D] encoder output
    encoder_mask: torch.Tensor  # [B, E] int64, 1 = real encoder position
    cross_kv: KVState  # per decoder layer [B, H, E, hd], computed once from `encoder_states`

    def filter(self, keep: Sequence[int]) -> Seq2SeqBatch:
        """Keep the rows at indices `keep`, dropping columns that are now pad in every row."""
        rows = torch.tensor(keep, dtype=torch.long, device=self.attention_mask.device)
        mask, encoder_mask = self.attention_mask[rows], self.encoder_mask[rows]
        start, encoder_start = _first_used_column(mask), _first_used_column(encoder_mask)
        return Seq2SeqBatch(
            request_ids=tuple(self.request_ids[i] for i in keep),
            kv=self.kv.select(rows, start),
            attention_mask=mask[:, start:],
            next_positions=self.next_positions[rows],
            encoder_states=self.encoder_states[rows, encoder_start:],
            encoder_mask=encoder_mask[:, encoder_start:],
            cross_kv=self.cross_kv.select(rows, encoder_start),
        )

    def __len__(self) -> int:
        return len(self.request_ids)

    @staticmethod
    def concatenate(parts: Sequence[Seq2SeqBatch]) -> Seq2SeqBatch:
        """One batch holding every row of `parts`, both halves left-padded to the longest."""
        length = max(part.kv.length for part in parts)
        encoder_length = max(part.encoder_mask.shape[1] for part in parts)
        return Seq2SeqBatch(
            request_ids=tuple(rid for part in parts for rid in part.request_ids),
            kv=KVState.concatenate([part.kv for part in parts]),
            attention_mask=torch.cat([_left_pad(part.attention_mask, length, 1) for part in parts]),
            next_positions=torch.cat([part.next_positions for part in parts]),
            encoder_states=torch.cat([_left_pad(part.encoder_states, encoder_length, 1) for part in parts]),
            encoder_mask=torch.cat([_left_pad(part.encoder_mask, encoder_length, 1) for part in parts]),
            cross_kv=KVState.concatenate([part.cross_kv for part in parts]),
        )
