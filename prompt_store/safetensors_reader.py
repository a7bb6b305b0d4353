"""A strict safetensors reader for untrusted bytes.

The library reader trusts the header; an upload must not. Every length and offset is
checked against the real buffer before anything is allocated, so a forged header can
neither allocate gigabytes nor read outside the file. Tensors come back as float32 numpy
arrays (bf16 is widened bit-exactly), since prompts are kept in fp32 until use.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, TypeGuard

import numpy as np

from prompt_store.errors import ArtifactError, PickleRefused

MAX_HEADER_BYTES = 1 << 20
MAX_DIMS = 8  # PEFT's prompt tensors have at most three

_ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
# Pickle protocols 2-5 start with 0x80 (PROTO), torch.save's zip with PK. A safetensors file may start
# with 0x80 too (a header of 128 mod 256 bytes), so the magic is read only where the file is no safetensors.
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")


def read_safetensors(data: bytes, name: str = "adapter_model.safetensors") -> dict[str, np.ndarray]:
    """Parse `data` as safetensors and return `{tensor name: float32 array}`."""
    if not has_safetensors_layout(data) and data.startswith(_PICKLE_MAGIC):
        raise PickleRefused(name)
    if len(data) < 8:
        raise ArtifactError(f"{name}: {len(data)} bytes is too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise ArtifactError(f"{name}: header length {header_len} is impossible for a file of {len(data)} bytes")
    try:
        header = json.loads(data[8 : 8 + header_len], object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{name}: header is not valid JSON ({exc})") from None
    except RecursionError:
        raise ArtifactError(f"{name}: header nests JSON too deeply to be a safetensors header") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{name}: header must be a JSON object")
    body = memoryview(data)[8 + header_len :]
    tensors = {key: _read_tensor(name, key, entry, body) for key, entry in header.items() if key != "__metadata__"}
    _check_layout(name, header, len(body))
    return tensors


def has_safetensors_layout(data: bytes) -> bool:
    """The file's structure is safetensors': an 8-byte header length that fits the file, then a JSON object."""
    if len(data) < 9:
        return False
    (header_len,) = struct.unpack("<Q", data[:8])
    return header_len <= MAX_HEADER_BYTES and 8 + header_len <= len(data) and data[8:9] == b"{"


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A name given twice would let the header say one thing to us and another to other readers."""
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ArtifactError(f"safetensors header names {duplicates} more than once")
    return dict(pairs)


def _check_layout(name: str, header: dict[str, Any], body_len: int) -> None:
    """As the format requires, the tensors tile the body: no overlap, no gap, nothing after the last."""
    spans = sorted(tuple(entry["data_offsets"]) for key, entry in header.items() if key != "__metadata__")
    end = 0
    for begin, stop in spans:
        if begin != end:
            problem = "overlap" if begin < end else "leave a gap"
            raise ArtifactError(f"{name}: tensor data_offsets {problem} at byte {min(begin, end)}")
        end = stop
    if end != body_len:
        raise ArtifactError(f"{name}: {body_len - end} bytes after the last tensor belong to no tensor")


def _read_tensor(name: str, key: str, entry: object, body: memoryview) -> np.ndarray:
    where = f"{name}: tensor {key!r}"
    if not isinstance(entry, dict):
        raise ArtifactError(f"{where}: header entry must be an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _ITEM_SIZES:
        raise ArtifactError(f"{where}: dtype {dtype!r} is not a float type ({', '.join(_ITEM_SIZES)})")
    if not _is_int_list(shape) or any(dim < 0 for dim in shape):
        raise ArtifactError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not _is_int_list(offsets) or len(offsets) != 2:
        raise ArtifactError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    expected_bytes = math.prod(shape) * _ITEM_SIZES[dtype]
    if not 0 <= begin <= end <= len(body) or end - begin != expected_bytes:
        raise ArtifactError(
            f"{where}: data_offsets {offsets} do not hold {expected_bytes} bytes inside a body of {len(body)}"
        )
    # Even a tensor with a zero dimension must have a shape the file could hold: numpy refuses
    # shapes like [0, 2**62] (its size in bytes overflows), and so does this reader, first.
    if len(shape) > MAX_DIMS or math.prod(max(dim, 1) for dim in shape) * _ITEM_SIZES[dtype] > len(body):
        raise ArtifactError(f"{where}: shape {shape} does not fit in a body of {len(body)} bytes")
    raw = body[begin:end]
    if dtype == "BF16":
        widened = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        array = widened.view(np.float32)
    else:
        array = np.frombuffer(raw, dtype={"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype])
    return array.astype(np.float32).reshape(shape)


def _is_int_list(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(type(item) is int for item in value)
