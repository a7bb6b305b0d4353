"""Runtime forms: the device-side tensors a task version is served from. Immutable once built."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefixKV:
    """Per-layer keys and values that every request of the task attends to before its own tokens.

    Keys carry whatever the model's attention stores in its cache (rotary already applied for
    prompts the model ran over; raw keys for prefix tuning, exactly as PEFT feeds them).
    """

    keys: tuple[torch.Tensor, ...]  # per layer: [H_kv, N, head_dim]
    values: tuple[torch.Tensor, ...]  # per layer: [H_kv, N, head_dim]

    @property
    def num_virtual_tokens(self) -> int:
        return self.keys[0].shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


@dataclass(frozen=True)
class PromptEmbeddings:
    """Virtual-token embeddings, inserted into `inputs_embeds` where a prefix cannot stand in."""

    embeddings: torch.Tensor  # [N, D], float32 as trained
    # [N, D]: virtual tokens before the decoder's first token (encoder-decoder multitask prompts only).
    decoder: torch.Tensor | None = None

    @property
    def num_virtual_tokens(self) -> int:
        return self.embeddings.shape[0]

    @property
    def nbytes(self) -> int:
        tensors = [self.embeddings] if self.decoder is None else [self.embeddings, self.decoder]
        return sum(t.numel() * t.element_size() for t in tensors)


# The form one row of a batch is served with: a prefix KV, or (encoder-decoder prompt tuning)
# embeddings placed before the encoder input.
RowForm = PrefixKV | PromptEmbeddings


@dataclass(frozen=True)
class AdaptionPrompt:
    """LLaMA-Adapter: per adapted layer, the adapter tokens' keys and values (projected once by the
    layer's own key/value projections, no rotary) and the scalar gate on their attention."""

    layers: tuple[int, ...]  # indices of the adapted layers (the top ones)
    keys: tuple[torch.Tensor, ...]  # per adapted layer: [H_kv, A, head_dim]
    values: tuple[torch.Tensor, ...]  # per adapted layer: [H_kv, A, head_dim]
    gates: tuple[torch.Tensor, ...]  # per adapted layer: [1]

    @property
    def num_virtual_tokens(self) -> int:
        return self.keys[0].shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values, *self.gates))


Form = PrefixKV | PromptEmbeddings | AdaptionPrompt


@dataclass(frozen=True)
class TaskPrompt:
    """One task version ready to serve: a form per sub-task (one unless multitask prompt tuning)."""

    peft_type: str
    sha256: str
    prefixes: tuple[RowForm, ...]  # indexed by task_index; embeddings on encoder-decoders; empty for adapters
    embeddings: tuple[PromptEmbeddings, ...] | None  # None for prefix tuning, which has no embeddings
    adapter: AdaptionPrompt | None = None

    @property
    def num_tasks(self) -> int:
        return max(len(self.prefixes), len(self.embeddings or ()), 1)

    @property
    def num_virtual_tokens(self) -> int:
        forms: tuple[Form, ...] = self.prefixes or self.embeddings or ()
        first = self.adapter or forms[0]
        return first.num_virtual_tokens

    @property
    def nbytes(self) -> int:
        # An encoder-decoder prompt serves its embeddings directly: count each form once.
        forms: list[Form] = [*self.prefixes, *(self.embeddings or ()), *([self.adapter] if self.adapter else [])]
        return sum(form.nbytes for form in {id(form): form for form in forms}.values())
