"""Bad artifacts raise typed errors that name the field, the expected and the found value; nothing is unpickled."""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save

from prompt_store.artifact import load_artifact_dir, parse_artifact
from prompt_store.errors import ArtifactError, ArtifactMismatch, ArtifactTooLarge, PickleRefused, UnsupportedMethod
from prompt_store.spec import ModelSpec
from server.api.errors import status_of
from server.engine.model import model_spec
from tests.conftest import Zoo
from tests.factories import make_artifact, make_model


@pytest.fixture(scope="module")
def llama_artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, dict[str, Path]]:
    base = make_model("llama")
    root = tmp_path_factory.mktemp("artifacts")
    folders = {
        method: make_artifact(base, method, 5, root / method, seed=1)
        for method in ("prompt_tuning", "prefix", "multitask", "cpt")
    }
    return model_spec(base.config), folders


def files(folder: Path) -> tuple[bytes, bytes]:
    return (folder / "adapter_config.json").read_bytes(), (folder / "adapter_model.safetensors").read_bytes()


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def with_spec(spec: ModelSpec, **changes: int) -> ModelSpec:
    return ModelSpec(**{**spec.__dict__, **changes})


def test_every_method_loads(llama_artifacts) -> None:
    spec, folders = llama_artifacts
    for method, folder in folders.items():
        artifact = load_artifact_dir(folder, spec)
        assert artifact.num_virtual_tokens == 5, method
    assert load_artifact_dir(folders["multitask"], spec).num_tasks == 3


@pytest.mark.parametrize(
    ("method", "changes", "field", "expected", "found"),
    [
        ("prompt_tuning", {"hidden_size": 96}, "token_dim", 96, 64),
        ("cpt", {"hidden_size": 32}, "token_dim", 32, 64),
        ("prefix", {"num_layers": 4}, "num_layers", 4, 3),
        ("prefix", {"num_key_value_heads": 4}, "num_attention_heads", 4, 2),
        ("prefix", {"head_dim": 8}, "token_dim", 16, 32),
    ],
)
def test_artifact_for_another_model_names_the_field(llama_artifacts, method, changes, field, expected, found) -> None:
    spec, folders = llama_artifacts
    with pytest.raises(ArtifactMismatch) as caught:
        parse_artifact(*files(folders[method]), with_spec(spec, **changes))
    assert (caught.value.field, caught.value.expected, caught.value.found) == (field, expected, found)
    assert field in str(caught.value) and str(expected) in str(caught.value)


def test_wrong_tensor_names(llama_artifacts) -> None:
    spec, folders = llama_artifacts
    config, _ = files(folders["prompt_tuning"])
    weights = save({"prompt_embedding": tensors(folders["prompt_tuning"])["prompt_embeddings"]})
    with pytest.raises(
        ArtifactMismatch, match="tensors: expected \\['prompt_embeddings'\\], found \\['prompt_embedding'\\]"
    ):
        parse_artifact(config, weights, spec)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix"])
def test_wrong_tensor_shape(llama_artifacts, method) -> None:
    spec, folders = llama_artifacts
    config, _ = files(folders[method])
    weights = tensors(folders[method])
    weights["prompt_embeddings"] = weights["prompt_embeddings"][:4]
    with pytest.raises(ArtifactMismatch) as caught:
        parse_artifact(config, save(weights), spec)
    assert caught.value.field == "shape of prompt_embeddings"
    assert caught.value.found[0] == 4 and caught.value.expected[0] == 5


def test_multitask_task_matrices_must_match(llama_artifacts) -> None:
    spec, folders = llama_artifacts
    config, _ = files(folders["multitask"])
    weights = tensors(folders["multitask"])
    weights["prefix_task_rows"] = weights["prefix_task_rows"][:2]
    with pytest.raises(ArtifactMismatch, match="prefix_task_rows"):
        parse_artifact(config, save(weights), spec)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values(llama_artifacts, bad) -> None:
    spec, folders = llama_artifacts
    config, _ = files(folders["prefix"])
    weights = tensors(folders["prefix"])
    weights["prompt_embeddings"][2, 7] = bad
    with pytest.raises(ArtifactError, match="NaN or Inf"):
        parse_artifact(config, save(weights), spec)


def test_lora_and_unknown_types_are_unsupported(llama_artifacts, tmp_path) -> None:
    spec, folders = llama_artifacts
    lora = get_peft_model(make_model("llama"), LoraConfig(task_type="CAUSAL_LM", target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "lora")
    with pytest.raises(UnsupportedMethod, match="peft_type: expected one of .* found 'LORA'"):
        load_artifact_dir(tmp_path / "lora", spec)
    config = json.loads(files(folders["prompt_tuning"])[0])
    for key, value in (("peft_type", "SOFT_MAGIC"), ("task_type", "SEQ_2_SEQ_LM")):
        edited = json.dumps({**config, key: value}).encode()
        with pytest.raises(UnsupportedMethod, match=f"{key}: expected .* found '{value}'"):
            parse_artifact(edited, files(folders["prompt_tuning"])[1], spec)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: {**c, "num_virtual_tokens": "5"}, "num_virtual_tokens: expected an integer"),
        (lambda c: {**c, "num_virtual_tokens": 10**9}, "num_virtual_tokens: expected an integer in"),
        (lambda c: {k: v for k, v in c.items() if k != "token_dim"}, "token_dim: expected 64, found None"),
        (lambda c: [c], "must hold a JSON object"),
    ],
)
def test_bad_config_values(llama_artifacts, edit, message) -> None:
    spec, folders = llama_artifacts
    config, weights = files(folders["prompt_tuning"])
    with pytest.raises(ArtifactError, match=message):
        parse_artifact(json.dumps(edit(json.loads(config))).encode(), weights, spec)
    with pytest.raises(ArtifactError, match="not valid JSON"):
        parse_artifact(b"{not json", weights, spec)


class _Trap:
    """Unpickling this object would create a file: proof that nothing was unpickled if it does not exist."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pickled_weights_are_refused_without_unpickling(llama_artifacts, tmp_path) -> None:
    spec, folders = llama_artifacts
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"prompt_embeddings": _Trap(str(marker))})
    config, _ = files(folders["prompt_tuning"])
    with pytest.raises(PickleRefused, match="never unpickles"):
        parse_artifact(config, payload, spec)

    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes(config)
    (folder / "adapter_model.bin").write_bytes(payload)
    with pytest.raises(PickleRefused, match="adapter_model.bin.*safetensors"):
        load_artifact_dir(folder, spec)

    torch.save({"prompt_embeddings": torch.zeros(5, 64)}, tmp_path / "zip.bin")  # torch's zip format
    with pytest.raises(PickleRefused):
        parse_artifact(config, (tmp_path / "zip.bin").read_bytes(), spec)
    assert not marker.exists()


def header_file(header: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 1 << 40) + b"{}", "header length 1099511627776 is impossible"),
        (
            header_file({"prompt_embeddings": {"dtype": "F32", "shape": [5, 64], "data_offsets": [0, 1 << 40]}}),
            "data_offsets",
        ),
        (
            header_file(
                {"prompt_embeddings": {"dtype": "F32", "shape": [1 << 30, 1 << 30], "data_offsets": [0, 4]}}, b"\0" * 4
            ),
            "data_offsets",
        ),
        (
            header_file({"prompt_embeddings": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
            "not a float type",
        ),
        (header_file({"prompt_embeddings": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}), "shape"),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "not valid JSON"),
    ],
)
def test_forged_safetensors_headers_are_rejected_cheaply(llama_artifacts, weights, message) -> None:
    spec, folders = llama_artifacts
    config, _ = files(folders["prompt_tuning"])
    with pytest.raises(ArtifactError, match=message):
        parse_artifact(config, weights, spec)


def test_bfloat16_and_float16_files_are_widened_exactly(llama_artifacts) -> None:
    spec, folders = llama_artifacts
    config, _ = files(folders["prompt_tuning"])
    original = tensors(folders["prompt_tuning"])["prompt_embeddings"]
    for dtype in (torch.bfloat16, torch.float16):
        artifact = parse_artifact(config, save({"prompt_embeddings": original.to(dtype)}), spec)
        widened = torch.from_numpy(artifact.tensors["prompt_embeddings"])
        assert torch.equal(widened, original.to(dtype).float()), dtype


def test_size_limit(llama_artifacts) -> None:
    spec, folders = llama_artifacts
    config, weights = files(folders["prompt_tuning"])
    with pytest.raises(ArtifactTooLarge) as caught:
        parse_artifact(config, weights, spec, max_bytes=len(weights) - 1)
    assert status_of(caught.value) == 413


def test_the_server_rejects_an_artifact_for_another_architecture(zoo: Zoo) -> None:
    """A prefix trained on one model cannot be served on another: caught before any tensor is used."""
    other = {"llama": "gpt_neox", "gpt2": "qwen2", "gpt_neox": "qwen2", "qwen2": "llama"}[zoo.arch]
    spec = model_spec(make_model(other).config)
    with pytest.raises(ArtifactMismatch):
        load_artifact_dir(zoo.folders["prefix"], spec)
