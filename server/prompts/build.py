"""Turn a validated artifact into its runtime forms (DESIGN.md §2).

Prompt-style methods (prompt tuning, P-tuning, CPT, multitask) become virtual-token
embeddings, and then a prefix KV by running the frozen model over them once: in a causal
model the virtual tokens never see the input, so their keys and values are the same for
every request. Prefix tuning stores its keys and values directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from prompt_store import methods
from prompt_store.artifact import Artifact
from prompt_store.spec import ModelSpec
from server.prompts.forms import AdaptionPrompt, PrefixKV, PromptEmbeddings, TaskPrompt

EncodePrompt = Callable[[torch.Tensor], PrefixKV]  # [N, D] embeddings -> prefix KV
# (layer, adapter tokens [A, D]) -> that layer's adapter keys and values, each [H_kv, A, hd]
ProjectAdapter = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def virtual_embeddings(artifact: Artifact, part: int = 0) -> list[torch.Tensor]:
    """The fp32 virtual-token embeddings per sub-task: a list of [N, D].

    Seq2seq artifacts store S*N rows; the first N (`part` 0) are the ones PEFT puts before the input;
    an encoder-decoder's multitask prompt gives the next N (`part` 1) to the decoder.
    """
    n = artifact.num_virtual_tokens
    rows_of_part = slice(part * n, (part + 1) * n)
    shared = torch.from_numpy(artifact.tensors["prompt_embeddings"][rows_of_part].copy())  # [N, D]
    if artifact.peft_type != "MULTITASK_PROMPT_TUNING":
        return [shared]
    cols = torch.from_numpy(artifact.tensors["prefix_task_cols"][:, rows_of_part].copy())  # [T, N, r]
    rows = torch.from_numpy(artifact.tensors["prefix_task_rows"].copy())  # [T, r, D]
    return [shared * (cols[t] @ rows[t]) for t in range(artifact.num_tasks)]


def stored_prefix(artifact: Artifact, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> PrefixKV:
    """Prefix tuning's keys/values: slot 2l is layer l's key, 2l+1 its value."""
    n = artifact.num_virtual_tokens
    flat = torch.from_numpy(artifact.tensors["prompt_embeddings"].copy())  # [N, 2*L*H_kv*hd]
    slots = flat.view(n, 2 * spec.num_layers, spec.num_key_value_heads, spec.head_dim)
    slots = slots.permute(1, 2, 0, 3).to(device=device, dtype=dtype)  # [2L, H_kv, N, hd]
    keys = tuple(slots[2 * layer].contiguous() for layer in range(spec.num_layers))
    values = tuple(slots[2 * layer + 1].contiguous() for layer in range(spec.num_layers))
    return PrefixKV(keys=keys, values=values)


def adaption_prompt(
    artifact: Artifact, spec: ModelSpec, project: ProjectAdapter, device: torch.device, dtype: torch.dtype
) -> AdaptionPrompt:
    """LLaMA-Adapter's per-layer keys, values and gates, projected once by each adapted layer."""
    method = artifact.method
    assert isinstance(method, methods.AdaptionPrompt)
    layers = tuple(method.adapted_layers(artifact.config, spec))
    keys, values, gates = [], [], []
    for layer in layers:
        path = method.LAYER_PATHS[spec.model_type].format(layer)
        prompt = torch.from_numpy(artifact.tensors[f"{path}.adaption_prompt"][0].copy())  # [A, D]
        key, value = project(layer, prompt.to(device=device, dtype=dtype))
        keys.append(key.contiguous())
        values.append(value.contiguous())
        gates.append(torch.from_numpy(artifact.tensors[f"{path}.adaption_gate"].copy()).to(device=device, dtype=dtype))
    return AdaptionPrompt(layers, tuple(keys), tuple(values), tuple(gates))


def build_task_prompt(
    artifact: Artifact,
    spec: ModelSpec,
    encode: EncodePrompt,
    device: torch.device,
    dtype: torch.dtype,
    project: ProjectAdapter | None = None,
) -> TaskPrompt:
    """Every runtime form of `artifact`, on `device` in the model's `dtype`."""
    if artifact.peft_type == "ADAPTION_PROMPT":
        assert project is not None, "the engine projects adapters for every model family PEFT adapts"
        adapter = adaption_prompt(artifact, spec, project, device, dtype)
        return TaskPrompt(artifact.peft_type, artifact.sha256, prefixes=(), embeddings=None, adapter=adapter)
    if artifact.method.is_prefix:
        prefix = stored_prefix(artifact, spec, device, dtype)
        return TaskPrompt(artifact.peft_type, artifact.sha256, prefixes=(prefix,), embeddings=None)
    embeddings = tuple(PromptEmbeddings(e.to(device)) for e in virtual_embeddings(artifact))
    prefixes = tuple(encode(form.embeddings) for form in embeddings)
    return TaskPrompt(artifact.peft_type, artifact.sha256, prefixes=prefixes, embeddings=embeddings)
