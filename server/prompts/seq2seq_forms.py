"""Runtime forms on an encoder-decoder model (T5 family), as PEFT's `PeftModelForSeq2SeqLM` uses an artifact.

- Prompt tuning and P-tuning: PEFT puts the first N of the S*N stored rows before the encoder
  input and leaves the decoder alone, so the form is those N embeddings (DESIGN.md §2, form 2).
  The encoder attends both ways, so unlike a causal model nothing can be computed once per task.
- Multitask prompt tuning: as prompt tuning, per sub-task, and PEFT also puts the next N rows
  (modulated by the same sub-task product) before the decoder's first token.
- Prefix tuning: PEFT stacks the 2L stored slots twice (4L slots) and hands decoder layer l the
  chunk 4l..4l+3, i.e. slots 4l mod 2L (key) and 4l+1 mod 2L (value) as its self-attention prefix.
  The other two slots of the chunk would be the cross-attention cache, but PEFT empties it, so
  cross-attention is computed from the encoder output. The encoder gets nothing.
"""

from __future__ import annotations

import torch

from prompt_store.artifact import Artifact
from prompt_store.errors import UnsupportedMethod
from prompt_store.spec import ModelSpec
from server.prompts.build import virtual_embeddings
from server.prompts.forms import PrefixKV, PromptEmbeddings, RowForm, TaskPrompt


def decoder_prefix(artifact: Artifact, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> PrefixKV:
    """The decoder self-attention prefix PEFT builds from a prefix-tuning artifact."""
    n, num_slots = artifact.num_virtual_tokens, 2 * spec.num_layers
    flat = torch.from_numpy(artifact.tensors["prompt_embeddings"].copy())  # [N, 2L*H*hd]
    slots = flat.view(n, num_slots, spec.num_key_value_heads, spec.head_dim)
    slots = slots.permute(1, 2, 0, 3).to(device=device, dtype=dtype)  # [2L, H, N, hd]
    keys = tuple(slots[(4 * layer) % num_slots].contiguous() for layer in range(spec.num_layers))
    values = tuple(slots[(4 * layer + 1) % num_slots].contiguous() for layer in range(spec.num_layers))
    return PrefixKV(keys=keys, values=values)


def seq2seq_task_prompt(
    artifact: Artifact, spec: ModelSpec, num_decoder_layers: int, device: torch.device, dtype: torch.dtype
) -> TaskPrompt:
    """Every runtime form of `artifact` for an encoder-decoder model, on `device`."""
    if not artifact.method.is_prefix:
        encoder = virtual_embeddings(artifact)
        decoder: list[torch.Tensor | None] = [None] * len(encoder)
        if artifact.peft_type == "MULTITASK_PROMPT_TUNING":
            decoder = [e.to(device) for e in virtual_embeddings(artifact, part=1)]
        forms = tuple(PromptEmbeddings(e.to(device), d) for e, d in zip(encoder, decoder, strict=True))
        return TaskPrompt(artifact.peft_type, artifact.sha256, prefixes=forms, embeddings=forms)
    if num_decoder_layers != spec.num_layers:
        # PEFT sizes the prefix by the encoder's layer count, so decoder layers past it would get none.
        raise UnsupportedMethod(
            f"{artifact.peft_type}: this model has {spec.num_layers} encoder but {num_decoder_layers} decoder "
            "layers; prefixes are served only where the two counts agree"
        )
    prefix = decoder_prefix(artifact, spec, device, dtype)
    return TaskPrompt(artifact.peft_type, artifact.sha256, prefixes=(prefix,), embeddings=None)


def seq2seq_form_name(form: RowForm) -> str:
    """The runtime form a task is served with on an encoder-decoder, as `/v1/prompts` reports it."""
    if isinstance(form, PrefixKV):
        return "decoder_prefix_kv"
    return "encoder_embeddings" if form.decoder is None else "encoder_and_decoder_embeddings"
