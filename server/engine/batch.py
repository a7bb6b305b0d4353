"""A running batch of sequences that rows can leave (`filter`) and join (`concatenate`) between steps.

Layout per row (DESIGN.md §3): [pads][virtual-token prefix][pads][input tokens][generated tokens],
all rows left-padded to one length S. The attention mask marks pads 0; position ids are
explicit, so each row sees exactly the positions it would see alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from server.engine.kv_cache import KVState
from server.prompts.forms import AdaptionPrompt


@dataclass(frozen=True)
class Batch:
    request_ids: tuple[int, ...]  # [B] caller's ids, in row order
    kv: KVState  # per layer [B, H_kv, S, hd]
    attention_mask: torch.Tensor  # [B, S] int64, 1 = real position
    next_positions: torch.Tensor  # [B] int64, position id of each row's next token
    adapters: tuple[AdaptionPrompt | None, ...]  # [B] each row's LLaMA-Adapter, if its task has one

    def __len__(self) -> int:
        return len(self.request_ids)

    def filter(self, keep: Sequence[int]) -> Batch:
        """Keep the rows at indices `keep`, dropping the columns that are now pad in every row."""
        rows = torch.tensor(keep, dtype=torch.long, device=self.attention_mask.device)
        mask = self.attention_mask[rows]
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        return Batch(
            request_ids=tuple(self.request_ids[i] for i in keep),
            kv=self.kv.select(rows, start),
            attention_mask=mask[:, start:],
            next_positions=self.next_positions[rows],
            adapters=tuple(self.adapters[i] for i in keep),
        )

    @staticmethod
    def concatenate(batches: Sequence[Batch]) -> Batch:
        """One batch holding every row of `batches`, left-padded to the longest."""
        length = max(batch.kv.length for batch in batches)
        masks = [torch.nn.functional.pad(b.attention_mask, (length - b.kv.length, 0)) for b in batches]
        return Batch(
            request_ids=tuple(rid for batch in batches for rid in batch.request_ids),
            kv=KVState.concatenate([batch.kv for batch in batches]),
            attention_mask=torch.cat(masks),
            next_positions=torch.cat([batch.next_positions for batch in batches]),
            adapters=tuple(adapter for batch in batches for adapter in batch.adapters),
        )
