"""Attention over the KV pool, called by transformers in every layer of a causal model.

The runner registers `attention` in transformers' attention-function registry and hands each
forward a `StepLayout` (through the model's keyword arguments); model classes stay stock. The
forward is packed: every row's fed tokens one after another in a batch of one, no padding. Per
layer the layout writes the fed tokens' keys and values into their slots, then computes each
token's attention from parts whose softmaxes are merged by their log-sum-exp (as FlashInfer's
cascade attention and flash-decoding's split-K do), so no key is ever copied next to another:

- a decoding row (one token) attends its own run of the pool: a slice, one call per row;
- prompt tokens fed together attend each other causally (scored continuations: each its own branch);
- a chunk of a long prompt also sees the row's earlier tokens, read from its run;
- every token of a task sees the task's prefix, stored once: one call per prefix for all its tokens.

A row therefore pays for its own length only, and grouped-query heads are never repeated for the
pool: the query heads that share a key/value head are laid out as that head's queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from server.engine.kv_pool import KVPool
from server.prompts.forms import PrefixKV

ATTENTION = "promptswap"
STEP_KWARG = "promptswap_step"

Tokens = slice | torch.Tensor  # query tokens of a part: a range of the packed step, or their indices [n]


@dataclass(frozen=True)
class DecodeGroup:
    """`count` rows fed one token each, consecutive in the step, whose runs start `stride` slots apart
    from `start` and who attend `length` slots each (the fed token included): one call reads all their
    keys as one strided view of the pool, nothing copied. A row alone is a group of one. `merged`: the
    rows also read a prefix, so this part must report its log-sum-exp."""

    start: int
    stride: int
    count: int
    length: int
    merged: bool = False


@dataclass(frozen=True)
class Span:
    """Tokens fed together that attend each other: causally, or by `mask` ([n, n] additive)."""

    tokens: slice
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class Visible:
    """Query tokens that see every key of a run of the pool, or of a task's prefix."""

    tokens: Tokens
    run: tuple[int, int] = (0, 0)  # (first slot, length)
    prefix: PrefixKV | None = None


@dataclass(frozen=True)
class PrefixBatch:
    """Prefixes of one length whose rows feed as many tokens each, read by one call: their keys and
    values stacked per layer (a copy of a few small prefixes, kept by the runner while the set lasts).
    The tokens are laid prefix after prefix, `per_prefix` each."""

    tokens: Tokens
    per_prefix: int
    keys: tuple[torch.Tensor, ...]  # per layer [G, H_kv, N, hd]
    values: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class StepLayout:
    """Everything one forward's attention needs, built once and read by every layer.

    The packed step holds the decoding rows' tokens first (one each, group after group), then the
    spans; the first `len(slots)` tokens are stored at `slots`.
    """

    pool: KVPool
    slots: torch.Tensor  # [S] int64
    decode: tuple[DecodeGroup, ...]
    spans: tuple[Span, ...]
    visible: tuple[Visible, ...]  # earlier tokens of a row's own run (chunked prompts, scored continuations)
    prefixes: tuple[Visible | PrefixBatch, ...] = ()  # every task prefix read in this step
    prefixed: Tokens | None = None  # every token that reads a prefix

    @property
    def merged(self) -> bool:
        """Whether some token's attention has several parts, so every part reports its log-sum-exp."""
        return bool(self.visible or self.prefixes)

    def attend(
        self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """query [1, H, T, hd], key/value [1, H_kv, T, hd] of the fed tokens -> output [1, T, H, hd]."""
        q = query[0].transpose(0, 1)  # [T, H, hd]
        keys, values = key[0], value[0]  # [H_kv, T, hd]
        stored = len(self.slots)
        if stored:
            self.pool.write(layer, self.slots, keys[:, :stored], values[:, :stored])
        out = torch.empty_like(q)  # [T, H, hd]
        lse = q.new_empty(q.shape[:2], dtype=torch.float32) if self.merged else None  # [T, H]
        if self.decode:
            self._decode(layer, q, out, lse, scale)
        for span in self.spans:
            _span(span, q, keys, values, out, lse, scale)
        for own in self.visible:
            assert lse is not None
            merge(out, lse, own.tokens, *self._visible(layer, own, q, scale))
        if self.prefixes:
            assert lse is not None and self.prefixed is not None
            # A token reads at most one prefix: each part fills its tokens' rows, and one merge folds them all in.
            from_prefix, prefix_lse = torch.empty_like(out), torch.empty_like(lse)
            for part in self.prefixes:
                if isinstance(part, Visible):
                    from_prefix[part.tokens], prefix_lse[part.tokens] = self._visible(layer, part, q, scale)
                else:
                    from_prefix[part.tokens], prefix_lse[part.tokens] = _batch(layer, part, q, scale)
            merge(out, lse, self.prefixed, from_prefix[self.prefixed], prefix_lse[self.prefixed])
        return out[None]

    def _decode(self, layer: int, q: torch.Tensor, out: torch.Tensor, lse: torch.Tensor | None, scale: float) -> None:
        heads, head_dim = q.shape[1], q.shape[2]
        pool_keys, pool_values = self.pool.keys[layer], self.pool.values[layer]  # [1, H_kv, capacity, hd]
        kv_heads, capacity = pool_keys.shape[1], pool_keys.shape[2]
        rows = sum(group.count for group in self.decode)
        # The queries sharing a key/value head are that head's queries: [1, H_kv, group, hd] per row.
        queries = q[:rows].reshape(rows, 1, kv_heads, heads // kv_heads, head_dim)
        alone = queries.unbind(0)
        calls: list[Call] = []  # this layer's hot loop: as few tensor operations per row as possible
        first = 0
        for group in self.decode:
            count, start = group.count, group.start
            if count == 1:
                query = alone[first]
                keys = pool_keys[:, :, start : start + group.length]  # [1, H_kv, L, hd]
                values = pool_values[:, :, start : start + group.length]
            else:
                query = queries[first : first + count, 0]  # [n, H_kv, group, hd]
                size = (count, kv_heads, group.length, head_dim)
                strides = (group.stride * head_dim, capacity * head_dim, head_dim, 1)
                keys = pool_keys.as_strided(size, strides, start * head_dim)  # [n, H_kv, L, hd]
                values = pool_values.as_strided(size, strides, start * head_dim)
            calls.append(Call(query, keys, values, scale, group.merged))
            first += count
        results = [call() for call in calls]
        out[:rows] = torch.cat([o for o, _ in results]).reshape(rows, heads, head_dim)
        first = 0
        for call, (_, s) in zip(calls, results, strict=True):
            count = call.query.shape[0]
            if s is not None:
                assert lse is not None
                lse[first : first + count] = s.reshape(count, heads)
            first += count

    def _visible(self, layer: int, part: Visible, q: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The part's output [n, H, hd] and log-sum-exp [n, H] for its tokens."""
        if part.prefix is not None:
            keys, values = part.prefix.keys[layer][None], part.prefix.values[layer][None]  # [1, H_kv, N, hd]
        else:
            keys, values = self.pool.run(layer, *part.run)
        selected = q[part.tokens]  # [n, H, hd]
        count, heads, head_dim = selected.shape
        kv_heads = keys.shape[1]
        group = heads // kv_heads
        grouped = selected.view(count, kv_heads, group, head_dim).transpose(0, 1).reshape(1, kv_heads, -1, head_dim)
        o, s = attention_with_lse(grouped, keys, values, scale)  # [1, H_kv, n*group, hd], [1, H_kv, n*group]
        o = o[0].view(kv_heads, count, group, head_dim).transpose(0, 1).reshape(count, heads, head_dim)
        s = s[0].view(kv_heads, count, group).transpose(0, 1).reshape(count, heads)
        return o, s


def _batch(layer: int, part: PrefixBatch, q: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of prefixes: output [G*m, H, hd] and log-sum-exp [G*m, H] for their tokens."""
    keys, values = part.keys[layer], part.values[layer]  # [G, H_kv, N, hd]
    selected = q[part.tokens]  # [G*m, H, hd]
    count, heads, head_dim = selected.shape
    prefixes, kv_heads = keys.shape[0], keys.shape[1]
    group, m = heads // kv_heads, part.per_prefix
    # Each prefix's m tokens, as queries of its key/value heads: [G, H_kv, m*group, hd].
    grouped = (
        selected.view(prefixes, m, kv_heads, group, head_dim).transpose(1, 2).reshape(prefixes, kv_heads, -1, head_dim)
    )
    o, s = attention_with_lse(grouped, keys, values, scale)
    o = o.view(prefixes, kv_heads, m, group, head_dim).transpose(1, 2).reshape(count, heads, head_dim)
    s = s.view(prefixes, kv_heads, m, group).transpose(1, 2).reshape(count, heads)
    return o, s


@dataclass(frozen=True)
class Call:
    """One attention call of a decode step: queries [n, H_kv, group, hd] over keys/values [n, H_kv, L, hd]."""

    query: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    scale: float
    merged: bool  # report the log-sum-exp

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.merged:
            return attention_with_lse(self.query, self.keys, self.values, self.scale)
        return F.scaled_dot_product_attention(self.query, self.keys, self.values, scale=self.scale), None


def _span(
    span: Span,
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor | None,
    scale: float,
) -> None:
    tokens = span.tokens
    query = q[tokens].transpose(0, 1)[None]  # [1, H, n, hd]
    key, value = keys[:, tokens][None], values[:, tokens][None]  # [1, H_kv, n, hd]
    if lse is None and span.mask is None:
        o = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale, enable_gqa=True)
    else:
        group = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)  # [1, H, n, hd]
        mask = None if span.mask is None else span.mask.to(query.dtype)
        o, s = attention_with_lse(query, key, value, scale, causal=mask is None, mask=mask)
        if lse is not None:
            lse[tokens] = s[0].transpose(0, 1)
    out[tokens] = o[0].transpose(0, 1)


def attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool = False,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and the log-sum-exp of each query's scores.

    q [B, H, n, hd], k/v [B, H, m, hd] (as many heads as q) -> out [B, H, n, hd], lse [B, H, n] float32.
    `causal` needs n == m; `mask` is additive, broadcastable to [B, H, n, m], in q's dtype.
    """
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, is_causal=causal, attn_mask=mask, scale=scale
        )
        return out, lse
    return attention_with_lse_math(q, k, v, scale, causal, mask)


def attention_with_lse_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool = False,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`attention_with_lse` in plain matrix products, in float32, for any device."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale  # [B, H, n, m]
    if causal:
        n = scores.shape[-2]
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    if mask is not None:
        scores = scores + mask.float()
    lse = torch.logsumexp(scores, dim=-1)  # [B, H, n]
    out = torch.exp(scores - lse[..., None]) @ v.float()
    return out.to(q.dtype), lse


def merge(out: torch.Tensor, lse: torch.Tensor, tokens: Tokens, o: torch.Tensor, s: torch.Tensor) -> None:
    """Fold another part (o [n, H, hd], s [n, H]) into the tokens' running output and log-sum-exp."""
    before, before_lse = out[tokens].float(), lse[tokens]
    top = torch.maximum(before_lse, s)
    w_before, w_part = torch.exp(before_lse - top)[..., None], torch.exp(s - top)[..., None]  # [n, H, 1]
    total = w_before + w_part
    out[tokens] = ((before * w_before + o.float() * w_part) / total).to(out.dtype)
    lse[tokens] = top + torch.log(total[..., 0])


def branch_mask(lengths: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[n, n] additive mask of continuations laid back to back: each token sees its branch up to itself."""
    branch = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))  # [n]
    causal = torch.ones(len(branch), len(branch), dtype=torch.bool).tril()
    allowed = causal & (branch[:, None] == branch[None, :])
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, float("-inf")).to(device)


def attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature. Without a step layout (a caller other than the
    runner, e.g. PEFT on the same model object) it is transformers' own SDPA attention."""
    step: StepLayout | None = kwargs.pop(STEP_KWARG, None)
    if step is None:
        output, weights = sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
        return output, weights
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return step.attend(module.layer_idx, query, key, value, scale), None


def install(model: Any) -> None:
    """Make `model` compute attention here (with transformers' SDPA masks when called without a layout)."""
    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    model.set_attn_implementation(ATTENTION)
