"""LLaMA-Adapter (PEFT's `ADAPTION_PROMPT`) for rows of a shared batch.

PEFT wraps the attention of the top layers and adds to its output, per layer,

    gate · softmax(q · Kₐᵀ / √head_dim) · Vₐ      (then the layer's output projection; GPT-2: none)

where Kₐ, Vₐ are the layer's own key/value projections of the A adapter tokens (no rotary) and q
are the layer's queries (rotary applied): a separate softmax over the adapter tokens, no mask.
Here every row carries its own adapter or none, so the term is computed for the whole batch from
per-row keys padded to the longest adapter, a mask over the padding and a per-row gate (0 for rows
without an adapter in that layer, which therefore get exactly nothing added).

This is the only module that knows how a supported family's attention computes queries.
"""

from __future__ import annotations

import abc
import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from server.prompts.forms import AdaptionPrompt


class AttentionFamily(abc.ABC):
    """How one model family's attention is reached and how its queries and output are computed.

    Modules are typed `Any`: each family reads the attributes its transformers class defines.
    """

    @abc.abstractmethod
    def attention(self, model: Any, layer: int) -> Any:
        """The attention module of layer `layer`."""

    @abc.abstractmethod
    def project(self, attention: Any, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapter keys and values, each [H_kv, A, head_dim], from the adapter tokens [A, D]."""

    @abc.abstractmethod
    def queries(self, attention: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        """The layer's queries [B, H, T, head_dim] for the call it was given."""

    def output(self, attention: Any, mixed: torch.Tensor) -> torch.Tensor:
        """Map the adapter's attention result [B, T, H*head_dim] into the layer's output [B, T, D]."""
        return mixed


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class LlamaFamily(AttentionFamily):
    """Llama and Mistral: separate q/k/v/o projections, rotary on queries."""

    def attention(self, model: Any, layer: int) -> Any:
        return model.model.layers[layer].self_attn

    def project(self, attention: Any, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head_dim = attention.head_dim
        num_tokens = prompt.shape[0]
        keys = attention.k_proj(prompt).view(num_tokens, -1, head_dim).transpose(0, 1)  # [H_kv, A, hd]
        values = attention.v_proj(prompt).view(num_tokens, -1, head_dim).transpose(0, 1)  # [H_kv, A, hd]
        return keys, values

    def queries(self, attention: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        hidden = kwargs["hidden_states"]  # [B, T, D]
        batch, length, _ = hidden.shape
        queries = attention.q_proj(hidden).view(batch, length, -1, attention.head_dim).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]  # each [B, T, head_dim]
        cos, sin = cos[:, None], sin[:, None]
        return queries * cos + rotate_half(queries) * sin  # [B, H, T, hd]

    def output(self, attention: Any, mixed: torch.Tensor) -> torch.Tensor:
        return attention.o_proj(mixed)


class Gpt2Family(AttentionFamily):
    """GPT-2: one fused `c_attn` projection, learned positions (no rotary); PEFT skips `c_proj`."""

    def attention(self, model: Any, layer: int) -> Any:
        return model.transformer.h[layer].attn

    def project(self, attention: Any, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        num_tokens = prompt.shape[0]
        _, keys, values = attention.c_attn(prompt).split(attention.split_size, dim=-1)
        heads = (num_tokens, -1, attention.head_dim)
        return keys.view(heads).transpose(0, 1), values.view(heads).transpose(0, 1)  # [H, A, hd] each

    def queries(self, attention: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        hidden = args[0] if args else kwargs["hidden_states"]  # [B, T, D]
        batch, length, _ = hidden.shape
        queries = attention.c_attn(hidden).split(attention.split_size, dim=-1)[0]
        return queries.view(batch, length, -1, attention.head_dim).transpose(1, 2)  # [B, H, T, hd]


FAMILIES: dict[str, AttentionFamily] = {"llama": LlamaFamily(), "mistral": LlamaFamily(), "gpt2": Gpt2Family()}


@dataclass(frozen=True)
class LayerAdapters:
    """One layer's adapters for every row of a batch."""

    keys: torch.Tensor  # [B, H_kv, A, hd], zero where a row has fewer (or no) adapter tokens
    values: torch.Tensor  # [B, H_kv, A, hd]
    slots: torch.Tensor  # [B, 1, 1, A] bool: True where the row has an adapter token
    gates: torch.Tensor  # [B, 1, 1, 1]: the row's gate, 0 without an adapter in this layer
    rows: torch.Tensor  # [B, 1, 1]: 1 where the row has an adapter in this layer, else 0


def stack_adapters(adapters: Sequence[AdaptionPrompt | None]) -> dict[int, LayerAdapters]:
    """Per adapted layer, the batch's adapters padded to the longest."""
    present = [a for a in adapters if a is not None]
    length = max(a.num_virtual_tokens for a in present)
    like = present[0].keys[0]
    heads, _, head_dim = like.shape
    stacked = {}
    for layer in sorted({layer for a in present for layer in a.layers}):
        keys = like.new_zeros(len(adapters), heads, length, head_dim)
        values = like.new_zeros(len(adapters), heads, length, head_dim)
        # Rows without this layer keep every slot open over zero keys: a finite softmax that the zero gate cancels.
        slots = torch.ones(len(adapters), 1, 1, length, dtype=torch.bool, device=like.device)
        gates = like.new_zeros(len(adapters), 1, 1, 1)
        rows = like.new_zeros(len(adapters), 1, 1)
        for row, adapter in enumerate(adapters):
            if adapter is None or layer not in adapter.layers:
                continue
            index, num_tokens = adapter.layers.index(layer), adapter.num_virtual_tokens
            keys[row, :, :num_tokens] = adapter.keys[index]
            values[row, :, :num_tokens] = adapter.values[index]
            slots[row, ..., num_tokens:] = False
            gates[row] = adapter.gates[index]
            rows[row] = 1
        stacked[layer] = LayerAdapters(keys, values, slots, gates, rows)
    return stacked


class AdapterHooks:
    """Forward hooks on every layer's attention that add the adapter term for the rows that have one.

    The batch's adapters are per thread: a prompt being encoded on another thread while the engine
    runs a batch never sees that batch's adapters.
    """

    def __init__(self, model: nn.Module, family: AttentionFamily, num_layers: int) -> None:
        self.model = model
        self.family = family
        self._local = threading.local()
        for layer in range(num_layers):
            family.attention(model, layer).register_forward_hook(self._hook(layer), with_kwargs=True)

    def project(self, layer: int, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [H_kv, A, hd] of layer `layer` for adapter tokens [A, D]."""
        return self.family.project(self.family.attention(self.model, layer), prompt)

    @contextlib.contextmanager
    def applied(self, adapters: Sequence[AdaptionPrompt | None]) -> Iterator[None]:
        """Within the block, forward passes on this thread add row i's adapter to row i."""
        if all(adapter is None for adapter in adapters):
            yield
            return
        self._local.active = stack_adapters(adapters)
        try:
            yield
        finally:
            self._local.active = None

    def _hook(self, layer: int) -> Any:
        def add_adapter(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            active: dict[int, LayerAdapters] | None = getattr(self._local, "active", None)
            adapters = active.get(layer) if active else None
            if adapters is None:
                return None
            queries = self.family.queries(module, args, kwargs)  # [B, H, T, hd]
            group = queries.shape[1] // adapters.keys.shape[1]
            keys = adapters.keys.repeat_interleave(group, dim=1)  # [B, H, A, hd]
            values = adapters.values.repeat_interleave(group, dim=1)
            scores = queries @ keys.transpose(2, 3) / math.sqrt(queries.shape[-1])  # [B, H, T, A]
            scores = scores.masked_fill(~adapters.slots, float("-inf"))
            weights = adapters.gates * torch.softmax(scores, dim=-1, dtype=torch.float32).to(queries.dtype)
            batch, _, length, _ = queries.shape
            mixed = (weights @ values).transpose(1, 2).reshape(batch, length, -1)  # [B, T, H*hd]
            added = self.family.output(module, mixed) * adapters.rows  # [B, T, D]
            return (output[0] + added, *output[1:])

        return add_adapter
