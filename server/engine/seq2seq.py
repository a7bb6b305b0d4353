"""Forward passes over a frozen encoder-decoder model (T5 family), matching PEFT's `PeftModelForSeq2SeqLM`.

- Prompt tuning and P-tuning rows put their virtual embeddings before the encoder input (mask 1);
  the decoder is untouched.
- Multitask prompt-tuning rows do both: their sub-task's first N rows go before the encoder input,
  the next N before the decoder's first token.
- Prefix-tuning rows give the decoder's self-attention a key/value prefix; the encoder is untouched
  and cross-attention is computed from the encoder output.

The encoder runs once per new row; its output and the cross-attention keys/values computed from it
stay in the batch. Decode steps then run the decoder alone, one column per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from transformers.utils import ModelOutput

from server.engine.batch import Batch
from server.engine.kv_cache import KVState, encoder_decoder_kwargs, encoder_decoder_states
from server.engine.model import BaseModel
from server.engine.runner import PAD_TOKEN_ID, PrefillRow
from server.engine.seq2seq_batch import Seq2SeqBatch
from server.prompts.forms import PrefixKV

NO_STATE = KVState((), ())


class Seq2SeqRunner:
    """Runs the frozen encoder-decoder; every call is one forward pass for the whole batch."""

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.model = base.model
        self.device = base.device
        config = base.model.config
        start = config.decoder_start_token_id
        self.start_token_id = int(start if start is not None else config.pad_token_id or 0)
        self.num_decoder_layers = int(getattr(config, "num_decoder_layers", None) or base.spec.num_layers)

    @torch.inference_mode()
    def prefill(self, rows: Sequence[PrefillRow]) -> tuple[Seq2SeqBatch, torch.Tensor]:
        """Encode new rows and run the decoder's first step; returns the batch and logits [B, V] (float32)."""
        encoder_states, encoder_mask = self._encode(rows)
        prefixes = self._decoder_prefixes(rows, encoder_states, encoder_mask)
        num_virtual = torch.tensor([p.num_virtual_tokens if p else 0 for p in prefixes])[:, None]  # [B, 1]
        prefix_len = int(num_virtual.max())
        kv = NO_STATE
        if prefix_len:
            like = next(p for p in prefixes if p is not None)
            kv = KVState.from_prefixes(prefixes, prefix_len, like)
        # Prefixes right-aligned, so every row's first decoder token sits in the same column.
        attention_mask = (torch.arange(prefix_len + 1) >= prefix_len - num_virtual).long()  # [B, P + 1]
        start = torch.full((len(rows), 1), self.start_token_id, dtype=torch.long)  # [B, 1]
        out = self.model(
            encoder_outputs=(encoder_states,),
            attention_mask=encoder_mask,
            decoder_input_ids=start.to(self.device),
            decoder_attention_mask=attention_mask.to(self.device),
            **encoder_decoder_kwargs(kv, NO_STATE),
        )
        self_kv, cross_kv = encoder_decoder_states(out)
        batch = Seq2SeqBatch(
            request_ids=tuple(row.request_id for row in rows),
            kv=self_kv,
            attention_mask=attention_mask.to(self.device),
            next_positions=(num_virtual + 1).squeeze(1).to(self.device),
            encoder_states=encoder_states,
            encoder_mask=encoder_mask,
            cross_kv=cross_kv,
            adapters=(None,) * len(rows),  # LLaMA-Adapter is for causal models only
        )
        return batch, out.logits[:, -1].float()

    @torch.inference_mode()
    def decode(self, batch: Batch, token_ids: torch.Tensor) -> tuple[Seq2SeqBatch, torch.Tensor]:
        """Append one decoder token per row ([B]); return the grown batch and next-token logits [B, V]."""
        assert isinstance(batch, Seq2SeqBatch)
        attention_mask = torch.nn.functional.pad(batch.attention_mask, (0, 1), value=1)  # [B, S + 1]
        out = self._decoder_forward(batch, token_ids.to(self.device)[:, None], attention_mask)
        self_kv, _ = encoder_decoder_states(out)
        logits: torch.Tensor = out["logits"]  # [B, 1, V]
        grown = dataclasses.replace(
            batch, kv=self_kv, attention_mask=attention_mask, next_positions=batch.next_positions + 1
        )
        return grown, logits[:, -1].float()

    @torch.inference_mode()
    def extend(self, batch: Batch, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed K more decoder tokens per row ([B, K], right-padded); logits [B, K, V] (float32).

        Used to score continuations; the batch is not changed. Right padding is safe: a real token
        never attends to the pads that follow it.
        """
        assert isinstance(batch, Seq2SeqBatch)
        attention_mask = torch.nn.functional.pad(batch.attention_mask, (0, token_ids.shape[1]), value=1)
        logits: torch.Tensor = self._decoder_forward(batch, token_ids.to(self.device), attention_mask)["logits"]
        return logits.float()  # [B, K, V]

    def _decoder_forward(
        self, batch: Seq2SeqBatch, token_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> ModelOutput:
        # token_ids: [B, K]; attention_mask: [B, S + K]. Cross-attention reuses the batch's keys/values.
        return self.model(
            encoder_outputs=(batch.encoder_states,),
            attention_mask=batch.encoder_mask,
            decoder_input_ids=token_ids,
            decoder_attention_mask=attention_mask,
            **encoder_decoder_kwargs(batch.kv, batch.cross_kv),
        )

    def _decoder_prefixes(
        self, rows: Sequence[PrefillRow], encoder_states: torch.Tensor, encoder_mask: torch.Tensor
    ) -> list[PrefixKV | None]:
        """Each row's decoder self-attention prefix: a prefix-tuning prefix as stored, or the keys and values
        of the decoder's virtual tokens (multitask prompts), computed here as they attend to the encoder output."""
        prefixes = [row.prompt.prefix for row in rows]
        virtual = {
            i: encoder.decoder
            for i, encoder in enumerate(row.prompt.encoder for row in rows)
            if encoder is not None and encoder.decoder is not None
        }
        if not virtual:
            return prefixes
        length = max(e.shape[0] for e in virtual.values())
        embeds = encoder_states.new_zeros(len(virtual), length, encoder_states.shape[-1])  # [b, M, D]
        mask = torch.zeros(len(virtual), length, dtype=torch.long, device=self.device)  # [b, M]
        for j, e in enumerate(virtual.values()):
            embeds[j, length - e.shape[0] :] = e.to(embeds.dtype)
            mask[j, length - e.shape[0] :] = 1
        index = torch.tensor(list(virtual), device=self.device)
        out = self.model(
            encoder_outputs=(encoder_states[index],),
            attention_mask=encoder_mask[index],
            decoder_inputs_embeds=embeds,
            decoder_attention_mask=mask,
            **encoder_decoder_kwargs(NO_STATE, NO_STATE),
        )
        state, _ = encoder_decoder_states(out)  # per layer [b, H, M, hd], rows left-padded
        for j, (i, e) in enumerate(virtual.items()):
            start = length - e.shape[0]
            prefixes[i] = PrefixKV(
                tuple(k[j, :, start:] for k in state.keys), tuple(v[j, :, start:] for v in state.values)
            )
        return prefixes

    def _encode(self, rows: Sequence[PrefillRow]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output [B, E, D] and mask [B, E]: each row is [pads][virtual tokens][input tokens]."""
        prompts = [row.prompt.encoder for row in rows]
        num_virtual = [p.num_virtual_tokens if p else 0 for p in prompts]
        lengths = [n + len(row.input_ids) for n, row in zip(num_virtual, rows, strict=True)]
        length = max(lengths)
        input_ids = torch.full((len(rows), length), PAD_TOKEN_ID, dtype=torch.long)  # [B, E]
        for i, row in enumerate(rows):
            input_ids[i, length - len(row.input_ids) :] = torch.tensor(row.input_ids, dtype=torch.long)
        embeds = self.model.get_input_embeddings()(input_ids.to(self.device))  # [B, E, D]
        for i, prompt in enumerate(prompts):
            if prompt is not None:
                start = length - lengths[i]
                embeds[i, start : start + num_virtual[i]] = prompt.embeddings.to(embeds.dtype)
        mask = (torch.arange(length) >= length - torch.tensor(lengths)[:, None]).long().to(self.device)  # [B, E]
        encoder = self.model.get_encoder()
        return encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state, mask
