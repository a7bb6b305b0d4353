"""Parse and validate a PEFT prompt-learning artifact against a served model.

An artifact is the pair PEFT's `save_pretrained` writes: `adapter_config.json` and
`adapter_model.safetensors`. Everything here is checked before the artifact is used or
stored; each problem raises a typed error that names the field, the expected and the
found value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prompt_store.errors import (
    ArtifactError,
    ArtifactMismatch,
    ArtifactTooLarge,
    InvalidCard,
    PickleRefused,
    RuntimeFormTooLarge,
    UnsupportedMethod,
)
from prompt_store.heads import find_head, head_shapes
from prompt_store.methods import METHODS, PromptMethod
from prompt_store.records import TaskCard
from prompt_store.safetensors_reader import read_safetensors
from prompt_store.spec import MODEL_KINDS, ModelSpec

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
DEFAULT_MAX_BYTES = 256 << 20
MAX_CONFIG_DEPTH = 16  # PEFT writes at most 3 levels; the config is stored in the record, which nests it further
_TOO_DEEP = f"{CONFIG_FILE} nests arrays or objects more than {MAX_CONFIG_DEPTH} levels deep"


@dataclass(frozen=True)
class Artifact:
    """A validated artifact: its PEFT config and its fp32 tensors, as found in the file."""

    peft_type: str
    config: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(repr=False)  # float32, shapes per prompt_store.methods
    num_virtual_tokens: int
    num_tasks: int  # sub-tasks a request may pick with task_index (MPT), else 1
    sha256: str
    nbytes: int
    num_labels: int | None = None  # rows of the classifier head (SEQ_CLS artifacts on encoder models)

    @property
    def method(self) -> PromptMethod:
        return METHODS[self.peft_type]

    def runtime_nbytes(self, spec: ModelSpec, dtype_bytes: int) -> int:
        """Device bytes of its runtime forms on a model of `dtype_bytes` per value, before any is built."""
        head = self.num_labels * (spec.hidden_size + 1) * dtype_bytes if self.num_labels else 0  # weight and bias
        return self.method.runtime_nbytes(self.config, spec, dtype_bytes) + head


def check_runtime_size(artifact: Artifact, spec: ModelSpec, dtype_bytes: int, max_bytes: int) -> None:
    """Refuse an artifact whose runtime form would pass `max_bytes` on the device: a small file can
    stand for a large form (multitask sub-tasks × virtual tokens × every layer's keys and values)."""
    nbytes = artifact.runtime_nbytes(spec, dtype_bytes)
    if nbytes > max_bytes:
        raise RuntimeFormTooLarge(
            f"this {artifact.peft_type} artifact ({artifact.num_tasks} sub-task(s) × {artifact.num_virtual_tokens} "
            f"virtual tokens) would take {nbytes} bytes on the device; this server's limit is {max_bytes} bytes "
            "per task version"
        )


def load_artifact_dir(path: str | Path, spec: ModelSpec, max_bytes: int = DEFAULT_MAX_BYTES) -> Artifact:
    """Read a PEFT `save_pretrained` directory; refuses pickled weights without opening them."""
    folder = Path(path)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        if (folder / PICKLE_FILE).exists():
            raise PickleRefused(str(folder / PICKLE_FILE))
        raise ArtifactError(f"{folder}: no {WEIGHTS_FILE} found")
    config = folder / CONFIG_FILE
    if not config.is_file():
        raise ArtifactError(f"{folder}: no {CONFIG_FILE} found")
    for file in (config, weights):
        if file.stat().st_size > max_bytes:
            raise ArtifactTooLarge(f"{file.name} is {file.stat().st_size} bytes; the limit is {max_bytes}")
    return parse_artifact(config.read_bytes(), weights.read_bytes(), spec, max_bytes)


def parse_artifact(
    config_bytes: bytes, weights_bytes: bytes, spec: ModelSpec, max_bytes: int = DEFAULT_MAX_BYTES
) -> Artifact:
    """Validate the two files' bytes against `spec` and return the artifact."""
    for name, data in ((CONFIG_FILE, config_bytes), (WEIGHTS_FILE, weights_bytes)):
        if len(data) > max_bytes:
            raise ArtifactTooLarge(f"{name} is {len(data)} bytes; the limit is {max_bytes}")
    config = _parse_config(config_bytes)
    peft_type = config.get("peft_type")
    method = METHODS.get(peft_type) if isinstance(peft_type, str) else None
    if method is None:
        raise UnsupportedMethod(f"peft_type: expected one of {sorted(METHODS)}, found {peft_type!r}")
    if spec.kind not in method.kinds:
        raise UnsupportedMethod(f"{method.peft_type} artifacts cannot be served on a {spec.kind} model")
    task_type = config.get("task_type")
    if task_type != MODEL_KINDS[spec.kind]:
        raise UnsupportedMethod(
            f"task_type: expected {MODEL_KINDS[spec.kind]!r} for this {spec.kind} model, found {task_type!r}"
        )
    method.check_config(config, spec)

    tensors = read_safetensors(weights_bytes)
    expected = method.expected_shapes(config, spec)
    head = find_head(tensors, spec) if spec.kind == "encoder" else None
    if head is not None:
        expected.update(head_shapes(head, spec))
    if sorted(tensors) != sorted(expected):
        raise ArtifactMismatch("tensors", sorted(expected), sorted(tensors))
    for name, shape in expected.items():
        found = tuple(tensors[name].shape)
        if found != shape:
            raise ArtifactMismatch(f"shape of {name}", list(shape), list(found))
        if not np.isfinite(tensors[name]).all():
            raise ArtifactError(f"{name}: contains NaN or Inf values")
    return Artifact(
        peft_type=method.peft_type,
        config=config,
        tensors=tensors,
        num_virtual_tokens=method.num_virtual_tokens(config),
        num_tasks=method.num_tasks(config),
        sha256=hashlib.sha256(weights_bytes).hexdigest(),
        nbytes=len(config_bytes) + len(weights_bytes),
        num_labels=head.num_labels if head else None,
    )


def check_card(card: TaskCard, artifact: Artifact, spec: ModelSpec) -> None:
    """A card must fit its artifact: a template may place {prompt} only where embeddings can go."""
    if not card.places_prompt:
        return
    if artifact.method.is_prefix or artifact.peft_type == "ADAPTION_PROMPT":
        raise InvalidCard(
            f"card.json: the template places {{prompt}}, but {artifact.peft_type} stores no virtual-token "
            "embeddings to place; remove {prompt} (its virtual tokens always come first)"
        )
    if spec.kind != "causal":
        raise InvalidCard(
            f"card.json: placing {{prompt}} inside the template is served on causal models only, "
            f"and this is a {spec.kind} model"
        )


def _parse_config(data: bytes) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{CONFIG_FILE} is not valid JSON ({exc})") from None
    except RecursionError:  # nested past Python's own limit
        raise ArtifactError(_TOO_DEEP) from None
    if json_depth(config) > MAX_CONFIG_DEPTH:
        raise ArtifactError(_TOO_DEEP)
    if not isinstance(config, dict):
        raise ArtifactError(f"{CONFIG_FILE} must hold a JSON object")
    return config


def json_depth(value: object) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth + 1)
            pending.extend((child, depth + 1) for child in children)
    return deepest
