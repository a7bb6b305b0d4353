"""Forward passes over a frozen encoder-decoder model (T5 family), matching PEFT's `PeftModelForSeq2SeqLM`.

- Prompt tuning and P-tuning rows put their virtual embeddings before the encoder input (mask 1);
  the decoder is untouched.
- Multitask prompt-tuning rows do both: their sub-task's first N rows go before the encoder input,
  the next N before the decoder's first token.
- Prefix-tuning rows give the decoder's self-attention a key/value prefix; the encoder is untouched
  and cross-attention is computed from the encoder output.

The encoder runs once per new row; its output and the cross-attention keys/values computed from it
stay in the batch. Decode steps then run the decoder alone, one column per step.

This kind keeps its padded batch (`seq2seq_batch.py`) behind the runner interface the engine core
uses for every model kind: `forward` takes the step's works (new rows, one decoder token per
running row, continuations to score) and changes the batch only once every pass succeeded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from server.engine.kv_cache import KVState, encoder_decoder_kwargs, encoder_decoder_states
from server.engine.model import BaseModel
from server.engine.request import PAD_TOKEN_ID, Work
from server.engine.seq2seq_batch import Seq2SeqBatch
from server.prompts.forms import PrefixKV

NO_STATE = KVState((), ())


@dataclass
class Seq2SeqCache:
    """The running rows' padded batch (None while no row runs)."""

    batch: Seq2SeqBatch | None = None


class Seq2SeqRunner:
    """Runs the frozen encoder-decoder; each pass runs every row that takes part in it."""

    chunked_prefill = False  # the encoder reads the whole input at once
    prompt_is_context = False  # the input went to the encoder: decoded text starts fresh

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.model = base.model
        self.device = base.device
        config = base.model.config
        start = config.decoder_start_token_id
        self.start_token_id = int(start if start is not None else config.pad_token_id or 0)
        self.num_decoder_layers = int(getattr(config, "num_decoder_layers", None) or base.spec.num_layers)

    @property
    def kv_bytes_per_token(self) -> int:
        """A decoder position's self-attention keys and values (the padded batch adds what padding takes)."""
        spec, element = self.base.spec, torch.empty((), dtype=self.base.dtype).element_size()
        return 2 * self.num_decoder_layers * spec.num_key_value_heads * spec.head_dim * element

    def new_cache(self, capacity: int) -> Seq2SeqCache:
        return Seq2SeqCache()

    def release(self, cache: Seq2SeqCache, seq_ids: Sequence[int]) -> None:
        leaving = set(seq_ids)
        batch = cache.batch
        if batch is not None and leaving & set(batch.request_ids):
            keep = [i for i, rid in enumerate(batch.request_ids) if rid not in leaving]
            cache.batch = batch.filter(keep) if keep else None

    @torch.inference_mode()
    def forward(self, cache: Seq2SeqCache, works: Sequence[Work]) -> torch.Tensor:
        """Run the step's works; the logits [R, V] (float32) they ask for, in order. The cache changes
        only if every pass succeeds, so a failed step can be run again on part of its rows."""
        logits: dict[int, torch.Tensor] = {}  # seq id -> the rows of logits it asked for
        batch = cache.batch
        decoding = [w for w in works if w.start > 0 and not w.branches]
        if decoding:
            assert batch is not None, "a row decodes only after its prefill"
            batch, logits = self._decode(batch, decoding)
        new = [w for w in works if w.start == 0]
        if new:
            joined, new_logits = self.prefill(new)
            logits.update({w.seq_id: new_logits[i : i + 1] for i, w in enumerate(new)})
            batch = joined if batch is None else Seq2SeqBatch.concatenate([batch, joined])
        for work in works:
            if work.branches:
                assert batch is not None, "a row scores after its prefill"
                logits[work.seq_id] = self._score(batch.filter([batch.request_ids.index(work.seq_id)]), work)
        cache.batch = batch
        return torch.cat([logits[w.seq_id] for w in works if w.logits_at])

    def _decode(self, batch: Seq2SeqBatch, works: Sequence[Work]) -> tuple[Seq2SeqBatch, dict[int, torch.Tensor]]:
        """One decoder token for each of `works`' rows; the batch's other rows (scoring, or left out of a
        step run again after a failure) wait, left-padded by a column."""
        index = {rid: i for i, rid in enumerate(batch.request_ids)}
        rows = [index[w.seq_id] for w in works]
        waiting = sorted(set(range(len(batch))) - set(rows))
        tokens = torch.tensor([w.token_ids[0] for w in works], dtype=torch.long)
        grown, logits = self.decode(batch.filter(rows), tokens)
        if waiting:
            grown = Seq2SeqBatch.concatenate([grown, batch.filter(waiting)])
        return grown, {w.seq_id: logits[i : i + 1] for i, w in enumerate(works)}

    def _score(self, row: Seq2SeqBatch, work: Work) -> torch.Tensor:
        """Logits [n, V] of every token of the work's continuations, each fed after the row's first token."""
        count, longest = len(work.branches), max(work.branches)
        feed = torch.full((count, longest), PAD_TOKEN_ID, dtype=torch.long)  # [C, K], right-padded
        at = 0
        for branch, length in enumerate(work.branches):
            feed[branch, :length] = torch.tensor(work.token_ids[at : at + length])
            at += length
        logits = self.extend(row.filter([0] * count), feed)  # [C, K, V]
        return torch.cat([logits[branch, :length] for branch, length in enumerate(work.branches)])

    @torch.inference_mode()
    def prefill(self, rows: Sequence[Work]) -> tuple[Seq2SeqBatch, torch.Tensor]:
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
            request_ids=tuple(row.seq_id for row in rows),
            kv=self_kv,
            attention_mask=attention_mask.to(self.device),
            next_positions=(num_virtual + 1).squeeze(1).to(self.device),
            encoder_states=encoder_states,
            encoder_mask=encoder_mask,
            cross_kv=cross_kv,
        )
        return batch, out.logits[:, -1].float()

    @torch.inference_mode()
    def decode(self, batch: Seq2SeqBatch, token_ids: torch.Tensor) -> tuple[Seq2SeqBatch, torch.Tensor]:
        """Append one decoder token per row ([B]); return the grown batch and next-token logits [B, V]."""
        attention_mask = torch.nn.functional.pad(batch.attention_mask, (0, 1), value=1)  # [B, S + 1]
        out = self._decoder_forward(batch, token_ids.to(self.device)[:, None], attention_mask)
        self_kv, _ = encoder_decoder_states(out)
        logits: torch.Tensor = out["logits"]  # [B, 1, V]
        grown = dataclasses.replace(
            batch, kv=self_kv, attention_mask=attention_mask, next_positions=batch.next_positions + 1
        )
        return grown, logits[:, -1].float()

    @torch.inference_mode()
    def extend(self, batch: Seq2SeqBatch, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed K more decoder tokens per row ([B, K], right-padded); logits [B, K, V] (float32).

        Used to score continuations; the batch is not changed. Right padding is safe: a real token
        never attends to the pads that follow it.
        """
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
        self, rows: Sequence[Work], encoder_states: torch.Tensor, encoder_mask: torch.Tensor
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

    def _encode(self, rows: Sequence[Work]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output [B, E, D] and mask [B, E]: each row is [pads][virtual tokens][input tokens]."""
        prompts = [row.prompt.encoder for row in rows]
        num_virtual = [p.num_virtual_tokens if p else 0 for p in prompts]
        lengths = [n + len(row.token_ids) for n, row in zip(num_virtual, rows, strict=True)]
        length = max(lengths)
        input_ids = torch.full((len(rows), length), PAD_TOKEN_ID, dtype=torch.long)  # [B, E]
        for i, row in enumerate(rows):
            input_ids[i, length - len(row.token_ids) :] = torch.tensor(row.token_ids, dtype=torch.long)
        embeds = self.model.get_input_embeddings()(input_ids.to(self.device))  # [B, E, D]
        for i, prompt in enumerate(prompts):
            if prompt is not None:
                start = length - lengths[i]
                embeds[i, start : start + num_virtual[i]] = prompt.embeddings.to(embeds.dtype)
        mask = (torch.arange(length) >= length - torch.tensor(lengths)[:, None]).long().to(self.device)  # [B, E]
        encoder = self.model.get_encoder()
        return encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state, mask
