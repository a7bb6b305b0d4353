"""The only module that knows how transformers lays out its key/value cache: the padded batches of
encoder-decoder models (decoder self- and cross-attention) and of encoder classifiers with prefixes.

Everything else sees a `KVState`: per layer a key and a value tensor of shape [B, H_kv, S, head_dim].
Causal models do not use it: their keys and values live in the pool of `kv_pool.py`, written and read by
the attention function of `attention.py`, and a task's prefix is shared by reference there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, EncoderDecoderCache
from transformers.cache_utils import DynamicLayer
from transformers.utils import ModelOutput

from server.prompts.forms import PrefixKV


@dataclass(frozen=True)
class KVState:
    """Keys and values of a batch, one row per sequence, left-padded to a common length."""

    keys: tuple[torch.Tensor, ...]  # per layer: [B, H_kv, S, hd]
    values: tuple[torch.Tensor, ...]  # per layer: [B, H_kv, S, hd]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def to_cache(self) -> DynamicCache:
        """A transformers cache that the model extends in place during a forward pass."""
        if not self.keys:
            return DynamicCache()
        return DynamicCache(list(zip(self.keys, self.values, strict=True)))

    def model_kwargs(self) -> dict[str, object]:
        """Keyword arguments that hand this state to a model's forward as its cache."""
        return {"cache": self.to_cache(), "use_cache": True}

    @classmethod
    def from_output(cls, output: ModelOutput) -> KVState:
        """The grown state after a forward pass that was given `model_kwargs()`."""
        return cls.from_cache(output["cache"])

    @classmethod
    def from_cache(cls, cache: DynamicCache) -> KVState:
        keys, values = [], []
        for layer in cache.layers:
            assert isinstance(layer, DynamicLayer) and layer.keys is not None and layer.values is not None
            keys.append(layer.keys)
            values.append(layer.values)
        return cls(tuple(keys), tuple(values))

    def select(self, rows: torch.Tensor, start: int = 0) -> KVState:
        """Keep `rows` ([B'] indices) and drop the first `start` columns."""
        return KVState(
            tuple(k[rows, :, start:] for k in self.keys),
            tuple(v[rows, :, start:] for v in self.values),
        )

    def left_pad(self, length: int) -> KVState:
        """Zero columns in front so every layer has `length` positions."""
        extra = length - self.length
        if extra == 0:
            return self
        pad = (0, 0, extra, 0)  # (head_dim: none, seq: `extra` in front)
        return KVState(
            tuple(torch.nn.functional.pad(k, pad) for k in self.keys),
            tuple(torch.nn.functional.pad(v, pad) for v in self.values),
        )

    @staticmethod
    def concatenate(states: Sequence[KVState]) -> KVState:
        """Stack batches along rows after padding them to the longest."""
        length = max(state.length for state in states)
        padded = [state.left_pad(length) for state in states]
        num_layers = len(padded[0].keys)
        return KVState(
            tuple(torch.cat([s.keys[layer] for s in padded]) for layer in range(num_layers)),
            tuple(torch.cat([s.values[layer] for s in padded]) for layer in range(num_layers)),
        )

    @staticmethod
    def from_prefixes(prefixes: Sequence[PrefixKV | None], length: int, like: PrefixKV) -> KVState:
        """A batch cache whose row i holds prefix i right-aligned in `length` columns (None: all pad)."""
        num_layers = len(like.keys)
        heads, _, head_dim = like.keys[0].shape
        shape = (len(prefixes), heads, length, head_dim)
        keys = [like.keys[0].new_zeros(shape) for _ in range(num_layers)]
        values = [like.keys[0].new_zeros(shape) for _ in range(num_layers)]
        for row, prefix in enumerate(prefixes):
            if prefix is None:
                continue
            start = length - prefix.num_virtual_tokens
            for layer in range(num_layers):
                keys[layer][row, :, start:] = prefix.keys[layer]
                values[layer][row, :, start:] = prefix.values[layer]
        return KVState(tuple(keys), tuple(values))


def prefix_from_output(output: ModelOutput) -> PrefixKV:
    """The single row of a cache the model filled by running over a prompt alone."""
    state = KVState.from_output(output)
    return PrefixKV(tuple(k[0].contiguous() for k in state.keys), tuple(v[0].contiguous() for v in state.values))


def encoder_decoder_kwargs(self_kv: KVState, cross_kv: KVState) -> dict[str, object]:
    """Model kwargs for an encoder-decoder forward: the decoder's self-attention state, which it extends,
    and its cross-attention keys/values, which it reuses (empty: computed from the encoder output)."""
    # The cache marks a layer's cross-attention "updated" exactly when it holds keys, so a non-empty
    # `cross_kv` is reused as is and an empty one is filled once from the encoder output.
    return {"cache": EncoderDecoderCache(self_kv.to_cache(), cross_kv.to_cache()), "use_cache": True}


def encoder_decoder_states(output: ModelOutput) -> tuple[KVState, KVState]:
    """(self-attention, cross-attention) states after a forward given `encoder_decoder_kwargs`."""
    cache = output["cache"]
    assert isinstance(cache, EncoderDecoderCache)
    return KVState.from_cache(cache.self_attention_cache), KVState.from_cache(cache.cross_attention_cache)
