"""Runtime forms on an encoder classifier (BERT-style `SEQ_CLS`): a prompt plus the task's own head.

Attention in an encoder is bidirectional, so virtual tokens see the input and their keys and
values differ per request: prompt-style methods stay embeddings that go in front of the input.
Prefix tuning's stored keys and values are used as they are, as on a decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prompt_store.artifact import Artifact
from prompt_store.heads import find_head
from prompt_store.spec import ModelSpec
from server.prompts.build import stored_prefix, virtual_embeddings
from server.prompts.forms import PromptEmbeddings, TaskPrompt


@dataclass(frozen=True)
class ClassifierHead:
    """The task's linear classifier over the pooled output: logits = pooled @ weight.T + bias."""

    weight: torch.Tensor  # [C, D], in the model's dtype
    bias: torch.Tensor  # [C]

    @property
    def num_labels(self) -> int:
        return self.weight.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.weight, self.bias))


@dataclass(frozen=True, kw_only=True)
class EncoderPrompt(TaskPrompt):
    """A task version on an encoder: its prefix (prefix tuning) or embeddings (prompt methods), and its head."""

    head: ClassifierHead

    @property
    def nbytes(self) -> int:
        return super().nbytes + self.head.nbytes


def classifier_head(artifact: Artifact, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> ClassifierHead:
    names = find_head(artifact.tensors, spec)
    weight = torch.from_numpy(artifact.tensors[names.weight].copy())  # [C, D]
    if names.bias is None:
        bias = weight.new_zeros(names.num_labels)  # `score` heads have no bias
    else:
        bias = torch.from_numpy(artifact.tensors[names.bias].copy())  # [C]
    return ClassifierHead(weight.to(device=device, dtype=dtype), bias.to(device=device, dtype=dtype))


def build_encoder_prompt(
    artifact: Artifact, spec: ModelSpec, device: torch.device, dtype: torch.dtype
) -> EncoderPrompt:
    """The runtime form of a validated `SEQ_CLS` artifact, on `device` in the model's `dtype`."""
    head = classifier_head(artifact, spec, device, dtype)
    if artifact.method.is_prefix:
        prefix = stored_prefix(artifact, spec, device, dtype)
        return EncoderPrompt(artifact.peft_type, artifact.sha256, prefixes=(prefix,), embeddings=None, head=head)
    embeddings = tuple(PromptEmbeddings(e.to(device)) for e in virtual_embeddings(artifact))
    return EncoderPrompt(artifact.peft_type, artifact.sha256, prefixes=(), embeddings=embeddings, head=head)
