"""Forward passes over the base model: encode a prompt once, prefill new rows, decode one step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from server.engine.adaption import FAMILIES, AdapterHooks
from server.engine.batch import Batch
from server.engine.kv_cache import KVState, prefix_from_output
from server.engine.model import BaseModel
from server.prompts.forms import AdaptionPrompt, PrefixKV, PromptEmbeddings

PAD_TOKEN_ID = 0  # any valid id: pad positions are masked out and never sampled


@dataclass(frozen=True)
class RowPrompt:
    """What one row's task adds to it: at most one of a prefix, inline embeddings, an adapter or
    (encoder-decoder) embeddings before the encoder input."""

    prefix: PrefixKV | None = None  # virtual tokens before the input, as keys/values computed once
    inline: torch.Tensor | None = None  # [N, D] virtual-token embeddings placed among the input tokens
    inline_at: int = 0  # how many input tokens come before `inline`
    adapter: AdaptionPrompt | None = None  # LLaMA-Adapter: no positions, an extra attention term
    encoder: PromptEmbeddings | None = None  # encoder-decoder: before the encoder input (and the decoder's start)

    @property
    def num_virtual_tokens(self) -> int:
        """Positions the prompt takes in the row's sequence (its encoder's, on an encoder-decoder)."""
        form = self.prefix or self.encoder
        if form is not None:
            return form.num_virtual_tokens
        return 0 if self.inline is None else self.inline.shape[0]


NO_PROMPT = RowPrompt()


@dataclass(frozen=True)
class PrefillRow:
    request_id: int
    input_ids: Sequence[int]
    prompt: RowPrompt = NO_PROMPT

    @property
    def num_tokens(self) -> int:
        """Length of the row after its prefix: input tokens plus inline virtual tokens."""
        inline = self.prompt.inline
        return len(self.input_ids) + (0 if inline is None else inline.shape[0])

    def token_ids(self) -> list[int]:
        """The input ids with a pad id in each inline virtual-token slot."""
        ids, at = list(self.input_ids), self.prompt.inline_at
        slots = self.num_tokens - len(ids)
        return ids[:at] + [PAD_TOKEN_ID] * slots + ids[at:]


class ModelRunner:
    """Runs the frozen model; every call is one forward pass for the whole batch."""

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.model = base.model
        self.device = base.device
        family = FAMILIES.get(base.spec.model_type)
        self.adapters = AdapterHooks(self.model, family, base.spec.num_layers) if family else None

    @torch.inference_mode()
    def project_adapter(self, layer: int, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LLaMA-Adapter keys and values [H_kv, A, hd] of `layer` for adapter tokens [A, D]."""
        assert self.adapters is not None, "artifact validation admits adapters only for supported families"
        return self.adapters.project(layer, prompt)

    def _forward(self, adapters: Sequence[AdaptionPrompt | None], **inputs: object) -> Any:
        if self.adapters is None:
            return self.model(**inputs)
        with self.adapters.applied(adapters):
            return self.model(**inputs)

    @torch.inference_mode()
    def encode_prompt(self, embeddings: torch.Tensor) -> PrefixKV:
        """Run the model once over virtual-token embeddings [N, D] at positions 0..N-1."""
        inputs = embeddings.to(device=self.device, dtype=self.base.dtype)[None]  # [1, N, D]
        num_tokens = inputs.shape[1]
        out = self.model(
            inputs_embeds=inputs,
            attention_mask=torch.ones(1, num_tokens, dtype=torch.long, device=self.device),
            position_ids=torch.arange(num_tokens, device=self.device)[None],
            logits_to_keep=1,
            **KVState((), ()).model_kwargs(),
        )
        return prefix_from_output(out)

    @torch.inference_mode()
    def prefill(self, rows: Sequence[PrefillRow]) -> tuple[Batch, torch.Tensor]:
        """Prefill new rows in one pass; returns the batch and next-token logits [B, V] (float32)."""
        prefixes = [row.prompt.prefix for row in rows]
        num_virtual = [prefix.num_virtual_tokens if prefix else 0 for prefix in prefixes]
        num_input = [row.num_tokens for row in rows]
        prefix_len, input_len = max(num_virtual), max(num_input)
        kv = KVState((), ())
        if prefix_len:
            like = next(p for p in prefixes if p is not None)
            kv = KVState.from_prefixes(prefixes, prefix_len, like)

        device = self.device
        input_ids = torch.full((len(rows), input_len), PAD_TOKEN_ID, dtype=torch.long)  # [B, T]
        for i, row in enumerate(rows):
            input_ids[i, input_len - num_input[i] :] = torch.tensor(row.token_ids(), dtype=torch.long)
        columns = torch.arange(prefix_len + input_len)  # [P + T]
        virtual = torch.tensor(num_virtual)[:, None]  # [B, 1]
        tokens = torch.tensor(num_input)[:, None]  # [B, 1]
        is_prefix = (columns < prefix_len) & (columns >= prefix_len - virtual)
        is_input = columns >= prefix_len + input_len - tokens
        attention_mask = (is_prefix | is_input).long()  # [B, P + T]
        # Row i's tokens take positions N_i .. N_i + T_i - 1, as they would alone; pads get any valid one.
        positions = (virtual + torch.arange(input_len) - (input_len - tokens)).clamp(min=0)  # [B, T]

        adapters = tuple(row.prompt.adapter for row in rows)
        out = self._forward(
            adapters,
            **self._inputs(rows, input_ids.to(device)),
            attention_mask=attention_mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=1,
            **kv.model_kwargs(),
        )
        batch = Batch(
            request_ids=tuple(row.request_id for row in rows),
            kv=KVState.from_output(out),
            attention_mask=attention_mask.to(device),
            next_positions=(virtual + tokens).squeeze(1).to(device),
            adapters=adapters,
        )
        return batch, out.logits[:, -1].float()

    def _inputs(self, rows: Sequence[PrefillRow], input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """`input_ids`, or `inputs_embeds` with each row's inline virtual tokens written into their slots."""
        if all(row.prompt.inline is None for row in rows):
            return {"input_ids": input_ids}
        embeds = self.model.get_input_embeddings()(input_ids)  # [B, T, D]
        input_len = input_ids.shape[1]
        for i, row in enumerate(rows):
            inline = row.prompt.inline
            if inline is not None:
                start = input_len - row.num_tokens + row.prompt.inline_at
                embeds[i, start : start + inline.shape[0]] = inline.to(embeds.dtype)
        return {"inputs_embeds": embeds}

    @torch.inference_mode()
    def decode(self, batch: Batch, token_ids: torch.Tensor) -> tuple[Batch, torch.Tensor]:
        """Append one token per row ([B]) and return the grown batch and next-token logits [B, V]."""
        attention_mask = torch.nn.functional.pad(batch.attention_mask, (0, 1), value=1)  # [B, S + 1]
        out = self._forward(
            batch.adapters,
            input_ids=token_ids.to(self.device)[:, None],
            attention_mask=attention_mask,
            position_ids=batch.next_positions[:, None],
            logits_to_keep=1,
            **batch.kv.model_kwargs(),
        )
        grown = Batch(
            request_ids=batch.request_ids,
            kv=KVState.from_output(out),
            attention_mask=attention_mask,
            next_positions=batch.next_positions + 1,
            adapters=batch.adapters,
        )
        return grown, out.logits[:, -1].float()

    @torch.inference_mode()
    def extend(self, batch: Batch, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed K more tokens per row ([B, K], right-padded) after the batch; logits [B, K, V] (float32).

        Used to score continuations; the batch itself is not changed. Right padding is safe: a
        real token never attends to the pads that follow it.
        """
        num_new = token_ids.shape[1]
        attention_mask = torch.nn.functional.pad(batch.attention_mask, (0, num_new), value=1)  # [B, S + K]
        positions = batch.next_positions[:, None] + torch.arange(num_new, device=self.device)  # [B, K]
        out = self._forward(
            batch.adapters,
            input_ids=token_ids.to(self.device),
            attention_mask=attention_mask,
            position_ids=positions,
            logits_to_keep=0,
            **batch.kv.model_kwargs(),
        )
        return out.logits.float()
