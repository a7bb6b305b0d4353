"""The keys and values of every running row: one tensor per layer, allocated once, written in place.

Per layer, keys and values are each `[1, H_kv, capacity, head_dim]`. A row owns a run of slots
(`allocator.py`); a step writes each fed token's keys and values into its slot and nothing else
moves: rows joining or leaving copy nothing, and attention reads a row's run as a slice. Task
prefixes are not here: each lives once in the prompt cache and every row of its task reads it.

On a CPU the storage is only touched as rows fill it, so resident memory follows what is in use;
on a GPU it is reserved up front, as a serving engine should.
"""

from __future__ import annotations

import torch

from prompt_store.spec import ModelSpec


def kv_bytes_per_token(spec: ModelSpec, dtype: torch.dtype) -> int:
    """Bytes one position's keys and values take over all layers."""
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * spec.num_layers * spec.num_key_value_heads * spec.head_dim * element


class KVPool:
    def __init__(self, spec: ModelSpec, capacity: int, dtype: torch.dtype, device: torch.device) -> None:
        shape = (1, spec.num_key_value_heads, capacity, spec.head_dim)
        self.capacity = capacity
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(spec.num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(spec.num_layers)]
        self.bytes_per_token = kv_bytes_per_token(spec, dtype)

    @property
    def nbytes(self) -> int:
        return self.capacity * self.bytes_per_token

    def write(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store keys and values `[H_kv, n, hd]` of n tokens at `slots` ([n] int64)."""
        self.keys[layer][0].index_copy_(1, slots, keys)
        self.values[layer][0].index_copy_(1, slots, values)

    def run(self, layer: int, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views `[1, H_kv, length, hd]` of the keys and values in slots `start .. start + length`."""
        return self.keys[layer][:, :, start : start + length], self.values[layer][:, :, start : start + length]
