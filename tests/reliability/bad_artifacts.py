"""The table of bad uploads: each case builds multipart parts from valid PEFT files and names the answer.

Forged safetensors files are written byte by byte here, since the library writer refuses to make them.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

from tests.reliability.conftest import UPLOAD_LIMIT_MB

CONFIG, WEIGHTS, CARD = "adapter_config.json", "adapter_model.safetensors", "card.json"
Parts = dict[str, bytes]


@dataclass(frozen=True)
class Good:
    """Valid PEFT files for the served tiny Llama (hidden 64, 3 layers, 2 kv heads of 16, vocab 320)."""

    folders: dict[str, Path]  # "pt", "prefix", "mpt", "cpt"

    def parts(self, name: str = "pt") -> Parts:
        return {file: (self.folders[name] / file).read_bytes() for file in (CONFIG, WEIGHTS)}

    def config(self, name: str = "pt") -> dict[str, Any]:
        return json.loads((self.folders[name] / CONFIG).read_bytes())

    def tensors(self, name: str = "pt") -> dict[str, np.ndarray]:
        from safetensors.numpy import load

        return load((self.folders[name] / WEIGHTS).read_bytes())


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    build: Callable[[Good], Parts]
    task: str = "victim"  # the URL path segment, already percent-encoded


def forged(header: dict[str, Any] | str, body: bytes, header_len: int | None = None) -> bytes:
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(text) if header_len is None else header_len) + text + body


def config_edit(name: str = "pt", **changes: Any) -> Callable[[Good], Parts]:
    """The valid files of `name` with config keys changed (a value of ... removes the key)."""

    def build(good: Good) -> Parts:
        config = {**good.config(name), **changes}
        config = {key: value for key, value in config.items() if value is not ...}
        return {**good.parts(name), CONFIG: json.dumps(config).encode()}

    return build


def config_bytes(data: bytes) -> Callable[[Good], Parts]:
    return lambda good: {**good.parts(), CONFIG: data}


def weights_bytes(make: Callable[[Good], bytes], name: str = "pt") -> Callable[[Good], Parts]:
    return lambda good: {**good.parts(name), WEIGHTS: make(good)}


def tensor_edit(edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], name: str = "pt") -> Callable:
    return weights_bytes(lambda good: save(edit(good.tensors(name))), name)


def with_card(card: bytes) -> Callable[[Good], Parts]:
    return lambda good: {**good.parts(), CARD: card}


def pt_header(**entry: Any) -> dict[str, Any]:
    """The prompt-tuning header (one [6, 64] F32 tensor) with fields of its entry replaced."""
    return {"prompt_embeddings": {"dtype": "F32", "shape": [6, 64], "data_offsets": [0, 1536], **entry}}


def mpt_overlapping(good: Good) -> bytes:
    """prefix_task_rows claims the same bytes as prefix_task_cols (every size still right)."""
    header = {
        "prefix_task_cols": {"dtype": "F32", "shape": [3, 3, 2], "data_offsets": [0, 72]},
        "prefix_task_rows": {"dtype": "F32", "shape": [3, 2, 64], "data_offsets": [0, 1536]},
        "prompt_embeddings": {"dtype": "F32", "shape": [3, 64], "data_offsets": [1608, 2376]},
    }
    return forged(header, bytes(2376))


def set_value(value: float) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    def edit(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors["prompt_embeddings"][2, 5] = value
        return tensors

    return edit


def torch_zip_bytes() -> bytes:
    """What `torch.save` writes since 1.6: a zip holding a pickle (built here without torch)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"prompt_embeddings": [0.0] * 4}))
    return buffer.getvalue()


def empty_tensor_of_shape(shape: list[int]) -> Callable[[Good], bytes]:
    """The prompt-tuning file plus a tensor of no bytes and the given shape (numpy cannot even reshape to it)."""
    empty = {"dtype": "F32", "shape": shape, "data_offsets": [1536, 1536]}
    return lambda good: forged({**pt_header(), "empty": empty}, bytes(1536))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def mpt_amplified(good: Good) -> Parts:
    """A 200 KB multitask artifact whose 512 sub-tasks × 32 virtual tokens make a 16 MB runtime form."""
    config = {**good.config("mpt"), "num_tasks": 512, "num_virtual_tokens": 32, "num_ranks": 1}
    rng = np.random.default_rng(0)
    tensors = {
        "prompt_embeddings": rng.standard_normal((32, 64), dtype=np.float32),
        "prefix_task_cols": rng.standard_normal((512, 32, 1), dtype=np.float32),
        "prefix_task_rows": rng.standard_normal((512, 1, 64), dtype=np.float32),
    }
    return {CONFIG: json.dumps(config).encode(), WEIGHTS: save(tensors)}


def percent_encoded(name: str) -> str:
    """Every byte encoded, dots included, so no client or proxy normalizes `..` away before the server."""
    return "".join(f"%{byte:02X}" for byte in name.encode())


OVER_LIMIT = (UPLOAD_LIMIT_MB << 20) + 1

CASES = [
    # adapter_config.json
    Case("config_empty", 422, config_bytes(b"")),
    Case("config_truncated_json", 422, config_bytes(b'{"peft_type": "PROMPT_TUNING", "num_virt')),
    Case("config_not_an_object", 422, config_bytes(b"[1, 2, 3]")),
    Case("config_invalid_utf8", 422, config_bytes(b'{"peft_type": "\xff\xfe"}')),
    Case("peft_type_missing", 422, config_edit(peft_type=...)),
    Case("peft_type_lora", 422, config_edit(peft_type="LORA")),
    Case("peft_type_adaption_prompt", 422, config_edit(peft_type="ADAPTION_PROMPT")),
    Case("peft_type_not_a_string", 422, config_edit(peft_type=7)),
    Case("task_type_seq_cls", 422, config_edit(task_type="SEQ_CLS")),
    Case("hidden_size_mismatch", 422, config_edit(token_dim=65)),
    Case("prefix_layers_mismatch", 422, config_edit("prefix", num_layers=4)),
    Case("prefix_heads_mismatch", 422, config_edit("prefix", num_attention_heads=4)),
    Case("prefix_head_dim_mismatch", 422, config_edit("prefix", token_dim=48)),
    Case("cpt_token_outside_vocab", 422, config_edit("cpt", cpt_token_ids=[5, 6, 7, 8, 320])),
    Case("cpt_negative_token", 422, config_edit("cpt", cpt_token_ids=[5, 6, -1, 8, 9])),
    Case("virtual_tokens_zero", 422, config_edit(num_virtual_tokens=0)),
    Case("virtual_tokens_huge", 422, config_edit(num_virtual_tokens=10**12)),
    Case("virtual_tokens_past_context", 422, config_edit(num_virtual_tokens=300)),
    Case("virtual_tokens_float", 422, config_edit(num_virtual_tokens=6.0)),
    Case("virtual_tokens_disagree_with_file", 422, config_edit(num_virtual_tokens=7)),
    Case("submodules_three", 422, config_edit(num_transformer_submodules=3)),
    Case("mpt_zero_tasks", 422, config_edit("mpt", num_tasks=0)),
    Case("config_nested_100k_arrays", 422, config_bytes(nested(100_000).encode())),
    Case("config_nested_900_deep", 422, config_edit(extra=json.loads(nested(900)))),
    # a small file standing for a large runtime form (the servers here have a 32 MiB device cache: 8 MiB per form)
    Case("mpt_runtime_form_too_large", 413, mpt_amplified),
    # adapter_model.safetensors
    Case("weights_empty", 422, weights_bytes(lambda good: b"")),
    Case("weights_seven_bytes", 422, weights_bytes(lambda good: b"\x10" * 7)),
    Case("weights_truncated", 422, weights_bytes(lambda good: good.parts()[WEIGHTS][:-100])),
    Case("weights_garbage", 422, weights_bytes(lambda good: np.random.default_rng(0).bytes(4096))),
    Case("header_length_beyond_file", 422, weights_bytes(lambda good: forged(pt_header(), bytes(1536), 1 << 19))),
    Case("header_length_huge", 422, weights_bytes(lambda good: forged(pt_header(), bytes(1536), (1 << 63) - 1))),
    Case("header_not_json", 422, weights_bytes(lambda good: forged("{prompt_embeddings: F32}", bytes(1536)))),
    Case("header_not_an_object", 422, weights_bytes(lambda good: forged("[]", bytes(1536)))),
    Case(
        "offsets_out_of_range",
        422,
        weights_bytes(lambda good: forged(pt_header(data_offsets=[1536, 3072]), bytes(1536))),
    ),
    Case("offsets_reversed", 422, weights_bytes(lambda good: forged(pt_header(data_offsets=[1536, 0]), bytes(1536)))),
    Case("offsets_overlapping", 422, weights_bytes(mpt_overlapping, "mpt")),
    Case("bytes_after_last_tensor", 422, weights_bytes(lambda good: forged(pt_header(), bytes(1536 + 64)))),
    Case(
        "duplicate_tensor_names",
        422,
        weights_bytes(
            lambda good: forged(
                '{"prompt_embeddings": {"dtype": "F32", "shape": [6, 64], "data_offsets": [0, 1536]}, '
                '"prompt_embeddings": {"dtype": "F32", "shape": [6, 64], "data_offsets": [1536, 3072]}}',
                bytes(3072),
            )
        ),
    ),
    Case("integer_tensor", 422, tensor_edit(lambda t: {"prompt_embeddings": t["prompt_embeddings"].astype(np.int32)})),
    Case(
        "byte_tensor", 422, weights_bytes(lambda good: forged(pt_header(dtype="U8", data_offsets=[0, 384]), bytes(384)))
    ),
    Case("unknown_dtype", 422, weights_bytes(lambda good: forged(pt_header(dtype="F8_E4M3"), bytes(1536)))),
    Case("negative_dim", 422, weights_bytes(lambda good: forged(pt_header(shape=[-6, -64]), bytes(1536)))),
    Case("shape_0_by_2_to_the_62", 422, weights_bytes(empty_tensor_of_shape([0, 2**62]))),
    Case(
        "header_nested_100k_arrays",
        422,
        weights_bytes(lambda good: forged('{"prompt_embeddings": ' + nested(100_000) + "}", bytes(1536))),
    ),
    Case("wrong_shape", 422, tensor_edit(lambda t: {"prompt_embeddings": np.zeros((6, 65), np.float32)})),
    Case("nan_value", 422, tensor_edit(set_value(float("nan")))),
    Case("inf_value", 422, tensor_edit(set_value(float("-inf")))),
    Case("extra_tensor", 422, tensor_edit(lambda t: {**t, "extra": np.zeros((2, 2), np.float32)})),
    Case("missing_tensor", 422, tensor_edit(lambda t: {k: v for k, v in t.items() if k != "prefix_task_rows"}, "mpt")),
    # the files of the upload
    Case("missing_weights", 422, lambda good: {CONFIG: good.parts()[CONFIG]}),
    Case("missing_config", 422, lambda good: {WEIGHTS: good.parts()[WEIGHTS]}),
    Case("extra_file", 422, lambda good: {**good.parts(), "tokenizer.json": b"{}"}),
    Case(
        "pickle_adapter_model_bin",
        422,
        lambda good: {CONFIG: good.parts()[CONFIG], "adapter_model.bin": b"\x80\x04K\x01."},
    ),
    Case("pickle_renamed_safetensors", 422, weights_bytes(lambda good: pickle.dumps({"prompt_embeddings": [0.0]}))),
    Case("torch_zip_renamed_safetensors", 422, weights_bytes(lambda good: torch_zip_bytes())),
    Case("weights_over_limit", 413, weights_bytes(lambda good: bytes(OVER_LIMIT))),
    Case("config_over_limit", 413, config_bytes(b" " * OVER_LIMIT)),
    # card.json
    Case("card_not_json", 422, with_card(b"{template: x}")),
    Case("card_not_an_object", 422, with_card(b'["positive"]')),
    Case("card_template_without_input", 422, with_card(b'{"template": "Review: <text>"}')),
    Case("card_unknown_field", 422, with_card(b'{"labls": ["a", "b"]}')),
    Case("card_empty_labels", 422, with_card(b'{"labels": []}')),
    Case("card_bad_defaults", 422, with_card(b'{"defaults": {"temperature": -1}}')),
    Case("card_template_repeats_input", 422, with_card(json.dumps({"template": "{input}" * 1142}).encode())),
    Case("card_invalid_utf8", 422, with_card(b'{"description": "\xff"}')),
    Case(
        "card_too_large",
        422,
        with_card(json.dumps({"description": "x" * 3000, "template": "{input}" * 10000}).encode()),
    ),
    # task names (the URL path segment)
    Case("name_dot_dot", 400, lambda good: good.parts(), percent_encoded("..")),
    Case("name_hidden", 400, lambda good: good.parts(), ".hidden"),
    Case("name_traversal", 404, lambda good: good.parts(), percent_encoded("../../etc/passwd")),
    Case("name_backslash_traversal", 400, lambda good: good.parts(), percent_encoded("..\\..\\x")),
    Case("name_unicode", 400, lambda good: good.parts(), percent_encoded("naïve")),
    Case("name_65_characters", 400, lambda good: good.parts(), "a" * 65),
    Case("name_space", 400, lambda good: good.parts(), percent_encoded("a b")),
    Case("name_nul_byte", 400, lambda good: good.parts(), "a%00b"),
]
