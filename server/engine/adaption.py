"""LLaMA-Adapter (PEFT's `ADAPTION_PROMPT`) for rows of a shared batch.

PEFT wraps the attention of the top layers and adds to its output, per layer,

    gate · softmax(q · Kₐᵀ / √head_dim) · Vₐ      (then the layer's output projection; GPT-2: none)

where Kₐ, Vₐ are the layer's own key/value projections of the A adapter tokens (no rotary) and q
are the layer's queries (rotary applied): a separate softmax over the adapter tokens, no mask.
Here every row of a packed step carries its own adapter or none, so the term is computed for the
tokens of each row that has an adapter in that layer, and added to those tokens only.

This is the only module that knows how a supported family's attention computes queries.
"""

from __future__ import annotations

import abc
import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
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


# The packed tokens of one row of a step, and that row's adapter.
AdapterRow = tuple[slice, AdaptionPrompt]


class AdapterHooks:
    """Forward hooks on every layer's attention that add the adapter term for the rows that have one.

    The step's adapter rows are per thread: a prompt being encoded on another thread while the
    engine runs a step never sees that step's adapters.
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
    def applied(self, rows: Sequence[AdapterRow]) -> Iterator[None]:
        """Within the block, forward passes on this thread add each row's adapter to its tokens."""
        if not rows:
            yield
            return
        self._local.active = rows
        try:
            yield
        finally:
            self._local.active = None

    def _hook(self, layer: int) -> Any:
        def add_adapter(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            rows: Sequence[AdapterRow] = getattr(self._local, "active", None) or ()
            rows = [(tokens, adapter) for tokens, adapter in rows if layer in adapter.layers]
            if not rows:
                return None
            queries = self.family.queries(module, args, kwargs)  # [1, H, T, hd]
            result = output[0].clone()  # [1, T, D]
            for tokens, adapter in rows:
                result[:, tokens] += self._term(module, queries[:, :, tokens], adapter, layer)
            return (result, *output[1:])

        return add_adapter

    def _term(self, module: nn.Module, queries: torch.Tensor, adapter: AdaptionPrompt, layer: int) -> torch.Tensor:
        """gate · softmax(q·Kₐᵀ/√d)·Vₐ through the layer's output map, for one row's queries [1, H, n, hd]."""
        index = adapter.layers.index(layer)
        group = queries.shape[1] // adapter.keys[index].shape[0]
        keys = adapter.keys[index].repeat_interleave(group, dim=0)[None]  # [1, H, A, hd]
        values = adapter.values[index].repeat_interleave(group, dim=0)[None]
        scores = queries @ keys.transpose(2, 3) / math.sqrt(queries.shape[-1])  # [1, H, n, A]
        weights = adapter.gates[index] * torch.softmax(scores, dim=-1, dtype=torch.float32).to(queries.dtype)
        length = queries.shape[2]
        mixed = (weights @ values).transpose(1, 2).reshape(1, length, -1)  # [1, n, H*hd]
        return self.family.output(module, mixed)  # [1, n, D]
