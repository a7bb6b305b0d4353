"""Forward passes of a causal language model over the KV pool.

One `forward` runs every row's part of a step in one packed pass: decoding rows feed one token,
prefilling rows a chunk of their prompt, scoring rows their continuations. Row i's own token j
takes position N_i + j (N_i: its task's shared prefix), exactly what the row gets alone, and its
keys and values go to slot `segment + j` of the pool. `attention.py` does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from server.engine.adaption import FAMILIES, AdapterHooks, AdapterRow
from server.engine.attention import (
    STEP_KWARG,
    DecodeGroup,
    PrefixBatch,
    Span,
    StepLayout,
    Tokens,
    Visible,
    branch_mask,
    install,
)
from server.engine.kv_pool import KVPool, kv_bytes_per_token
from server.engine.model import BaseModel
from server.engine.request import PAD_TOKEN_ID, RowPrompt, Work
from server.prompts.forms import PrefixKV


def _order(work: Work) -> tuple[int, int, int, int]:
    """Packed order: decoding rows (one stored token), then prompt chunks, then scored continuations.
    Decoding rows without a prefix come first, then each task's rows by where their runs lie (rows that
    can be read as one strided view end up side by side); prompt chunks with a prefix come first, so the
    tokens that read a prefix are one range in most steps."""
    prefix = work.prompt.prefix
    task = 0 if prefix is None else id(prefix)
    if work.branches:
        return (2, prefix is None, task, 0)
    if work.num_tokens == 1:
        return (0, prefix is not None, task, work.segment)
    return (1, prefix is None, task, 0)


@dataclass
class PackedStep:
    """The model inputs and attention layout of one forward, built row by row."""

    device: torch.device
    token_ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    # decoding rows: (first slot of the run, keys, whether the row also reads a prefix)
    decode: list[tuple[int, int, bool]] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    visible: list[Visible] = field(default_factory=list)
    prefixes: dict[int, tuple[PrefixKV, list[int]]] = field(default_factory=dict)  # id -> (prefix, its tokens)
    inline: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (packed index, embedding [D])
    adapters: list[AdapterRow] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)  # work index -> first packed token

    def add(self, index: int, work: Work) -> None:
        first = len(self.token_ids)
        self.offsets[index] = first
        count, prompt = work.num_tokens, work.prompt
        tokens = slice(first, first + count)
        self.token_ids.extend(work.token_ids)
        before = prompt.num_prefix_tokens + work.start
        if work.branches:
            self.positions.extend(before + j for length in work.branches for j in range(length))
            self.spans.append(Span(tokens, mask=branch_mask(work.branches, torch.float32, self.device)))
        else:
            self.positions.extend(range(before, before + count))
            self.slots.extend(range(work.segment + work.start, work.segment + work.start + count))
            if count == 1:
                self.decode.append((work.segment, work.start + 1, prompt.prefix is not None))
            else:
                self.spans.append(Span(tokens))
        if work.start and (work.branches or count > 1):
            self.visible.append(Visible(tokens, run=(work.segment, work.start)))
        if prompt.prefix is not None:
            self.prefixes.setdefault(id(prompt.prefix), (prompt.prefix, []))[1].extend(range(first, first + count))
        if prompt.inline is not None and not work.branches:
            at = prompt.inline_at
            for j in range(max(at, work.start), min(at + prompt.inline.shape[0], work.start + count)):
                self.inline.append((first + j - work.start, prompt.inline[j - at]))
        if prompt.adapter is not None:
            self.adapters.append((tokens, prompt.adapter))

    def layout(self, pool: KVPool, stacks: PrefixStacks) -> StepLayout:
        prefixes = self._prefix_parts(stacks)
        prefixed = sorted(t for _, tokens in self.prefixes.values() for t in tokens)
        slots = torch.tensor(self.slots, dtype=torch.long, device=self.device)
        decode = tuple(decode_groups(self.decode))
        spans, visible = tuple(self.spans), tuple(self.visible)
        return StepLayout(
            pool, slots, decode, spans, visible, prefixes, _tokens(prefixed, self.device) if prefixed else None
        )

    def _prefix_parts(self, stacks: PrefixStacks) -> tuple[Visible | PrefixBatch, ...]:
        """One part per prefix, except that small prefixes of one length whose rows feed as many tokens
        (rows of many tasks decoding side by side) are read in one batched call."""
        buckets: dict[tuple[int, int], list[tuple[PrefixKV, list[int]]]] = {}
        for prefix, tokens in self.prefixes.values():
            buckets.setdefault((prefix.num_virtual_tokens, len(tokens)), []).append((prefix, tokens))
        parts: list[Visible | PrefixBatch] = []
        for (length, per_prefix), members in buckets.items():
            if len(members) > 1 and len(members) * length <= STACKED_PREFIX_POSITIONS:
                keys, values = stacks.get(tuple(prefix for prefix, _ in members))
                tokens = [t for _, member_tokens in members for t in member_tokens]
                parts.append(PrefixBatch(_tokens(tokens, self.device), per_prefix, keys, values))
            else:
                parts += [Visible(_tokens(tokens, self.device), prefix=prefix) for prefix, tokens in members]
        return tuple(parts)


class PrefixStacks:
    """Stacked keys and values of the sets of prefixes read together lately (per layer [G, H_kv, N, hd]).

    A set stays the same from step to step while the same tasks decode, so it is stacked once. Entries
    hold their prefixes, so a prefix object cannot be freed and its id reused while it is cached.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: list[tuple[tuple[PrefixKV, ...], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]] = []

    def get(self, prefixes: tuple[PrefixKV, ...]) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        for index, (cached, keys, values) in enumerate(self._entries):
            if len(cached) == len(prefixes) and all(a is b for a, b in zip(cached, prefixes, strict=True)):
                self._entries.append(self._entries.pop(index))
                return keys, values
        layers = range(len(prefixes[0].keys))
        keys = tuple(torch.stack([p.keys[layer] for p in prefixes]) for layer in layers)
        values = tuple(torch.stack([p.values[layer] for p in prefixes]) for layer in layers)
        self._entries = [*self._entries[-(self.size - 1) :], (prefixes, keys, values)]
        return keys, values


# Prefixes batched into one call hold at most this many positions together: stacking copies them.
STACKED_PREFIX_POSITIONS = 1024


def decode_groups(rows: list[tuple[int, int, bool]]) -> list[DecodeGroup]:
    """Group decoding rows `(run start, keys, merged)`, sorted by start, that one strided view can read:
    runs equally far apart, as many keys each, and alike in reading a prefix or not. Rows admitted
    together with equal reservations and inputs sit like that; any other row is a group of one."""
    groups: list[DecodeGroup] = []
    for start, length, merged in rows:
        last = groups[-1] if groups else None
        if last is not None and last.length == length and last.merged == merged:
            stride = start - last.start if last.count == 1 else last.stride
            if start == last.start + last.count * stride and length <= stride:
                groups[-1] = DecodeGroup(last.start, stride, last.count + 1, length, merged)
                continue
        groups.append(DecodeGroup(start, 0, 1, length, merged))
    return groups


def _tokens(indices: list[int], device: torch.device) -> Tokens:
    """A slice when the indices are one increasing range, as they are for most steps."""
    if indices == list(range(indices[0], indices[0] + len(indices))):
        return slice(indices[0], indices[0] + len(indices))
    return torch.tensor(indices, dtype=torch.long, device=device)


class CausalRunner:
    """Runs the frozen causal model; every call is one forward pass for the whole step."""

    chunked_prefill = True
    prompt_is_context = True  # generated text continues the input

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.model = base.model
        self.device = base.device
        install(self.model)
        family = FAMILIES.get(base.spec.model_type)
        self.adapters = AdapterHooks(self.model, family, base.spec.num_layers) if family else None
        self._no_mask = torch.empty(1, 1, 0, 0, device=self.device)  # a 4-D mask: transformers builds none
        self._stacks = PrefixStacks()

    @property
    def kv_bytes_per_token(self) -> int:
        return kv_bytes_per_token(self.base.spec, self.base.dtype)

    def new_cache(self, capacity: int) -> KVPool:
        return KVPool(self.base.spec, capacity, self.base.dtype, self.device)

    def release(self, cache: KVPool, seq_ids: Sequence[int]) -> None:
        """Nothing to do: a row's slots are freed by the scheduler, and nothing else holds it."""

    @torch.inference_mode()
    def project_adapter(self, layer: int, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LLaMA-Adapter keys and values [H_kv, A, hd] of `layer` for adapter tokens [A, D]."""
        assert self.adapters is not None, "artifact validation admits adapters only for supported families"
        return self.adapters.project(layer, prompt)

    @torch.inference_mode()
    def encode_prompt(self, embeddings: torch.Tensor) -> PrefixKV:
        """Run the model once over virtual-token embeddings [N, D] at positions 0..N-1; keep their keys/values."""
        count = embeddings.shape[0]
        pool = self.new_cache(count)
        inline = embeddings.to(device=self.device, dtype=self.base.dtype)
        self.forward(pool, [Work(0, [PAD_TOKEN_ID] * count, 0, RowPrompt(inline=inline))])
        keys = tuple(k[0].clone() for k in pool.keys)  # [H_kv, N, hd] per layer
        values = tuple(v[0].clone() for v in pool.values)
        return PrefixKV(keys, values)

    @torch.inference_mode()
    def forward(self, cache: KVPool, works: Sequence[Work]) -> torch.Tensor:
        """Run every work item; returns the next-token logits [R, V] (float32) that the items ask for,
        in the order of `works` and of each item's `logits_at`."""
        step = PackedStep(self.device)
        for index in sorted(range(len(works)), key=lambda i: _order(works[i])):
            step.add(index, works[index])
        keep = [step.offsets[i] + j for i, work in enumerate(works) for j in work.logits_at]
        device = self.device
        out = self._forward(
            step.adapters,
            **self._inputs(step),
            position_ids=torch.tensor([step.positions], dtype=torch.long, device=device),
            attention_mask=self._no_mask,
            use_cache=False,
            logits_to_keep=torch.tensor(keep, dtype=torch.long, device=device),
            **{STEP_KWARG: step.layout(cache, self._stacks)},
        )
        logits: torch.Tensor = out.logits[0]  # [R, V]
        return logits.float()

    def _inputs(self, step: PackedStep) -> dict[str, torch.Tensor]:
        """`input_ids`, or `inputs_embeds` with inline virtual tokens written into their slots."""
        input_ids = torch.tensor([step.token_ids], dtype=torch.long, device=self.device)  # [1, T]
        if not step.inline:
            return {"input_ids": input_ids}
        embeds = self.model.get_input_embeddings()(input_ids)  # [1, T, D]
        index = torch.tensor([i for i, _ in step.inline], dtype=torch.long, device=self.device)
        embeds[0, index] = torch.stack([e for _, e in step.inline]).to(embeds.dtype)
        return {"inputs_embeds": embeds}

    def _forward(self, adapters: Sequence[AdapterRow], **inputs: Any) -> Any:
        if self.adapters is None:
            return self.model(**inputs)
        with self.adapters.applied(adapters):
            return self.model(**inputs)
