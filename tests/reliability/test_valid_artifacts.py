"""Valid PEFT artifacts of many sizes are accepted, by `promptswap check` and by a live server.

A safetensors file starts with its header's length (8 bytes, little-endian): any header of 128 mod 256
bytes makes the file's first byte 0x80, the pickle protocol marker, and such files were refused as
pickles (issue 21: `AdaptionPromptConfig(adapter_layers=9, adapter_len=4)` on SmolLM2, about 1 in 32 real
artifacts). An 8-layer Llama lets LLaMA-Adapter headers grow by about 232 bytes a layer, so the sizes here
cover every residue the alignment allows, that one included.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import httpx
import pytest
import torch
from peft import AdaptionPromptConfig, MultitaskPromptTuningConfig, PrefixTuningConfig, PromptTuningConfig
from transformers import AutoModelForCausalLM, LlamaConfig

from tests.factories import make_tokenizer, save_artifact
from tests.reliability.conftest import serve, upload

LAYERS = 8


def header_length(folder: Path) -> int:
    (length,) = struct.unpack("<Q", (folder / "adapter_model.safetensors").read_bytes()[:8])
    return int(length)


@pytest.fixture(scope="module")
def eight_layers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """An 8-layer tiny Llama saved with its tokenizer, and artifacts PEFT made for it."""
    root = tmp_path_factory.mktemp("eight-layers")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    base = AutoModelForCausalLM.from_config(config).eval()
    model_dir = root / "model"
    base.save_pretrained(model_dir)
    make_tokenizer(model_dir)
    configs = [
        *(AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_layers=k, adapter_len=n)
          for k in range(1, LAYERS + 1) for n in (1, 4, 10)),
        *(PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n) for n in (1, 20, 200)),
        *(PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n) for n in (1, 30)),
        *(MultitaskPromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, num_tasks=t, num_ranks=2)
          for n, t in ((3, 2), (12, 40))),
    ]  # fmt: skip
    folders = [save_artifact(base, config, root / f"artifact-{i}", seed=i) for i, config in enumerate(configs)]
    return model_dir, folders


def test_the_sizes_include_headers_that_start_with_the_pickle_byte(eight_layers: tuple[Path, list[Path]]) -> None:
    _, folders = eight_layers
    residues = {header_length(folder) % 256 for folder in folders}
    assert 128 in residues, sorted(residues)
    assert len(residues) >= 16, sorted(residues)
    starts = {(folder / "adapter_model.safetensors").read_bytes()[:1] for folder in folders}
    assert b"\x80" in starts


def test_promptswap_check_accepts_every_size(eight_layers: tuple[Path, list[Path]]) -> None:
    model_dir, folders = eight_layers
    executable = shutil.which("promptswap")
    assert executable
    command = [executable, "check", *map(str, folders), "--model", str(model_dir), "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [report.get("error") for report in reports] == [None] * len(folders), result.stdout[-3000:]
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_live_server_accepts_and_serves_every_size(eight_layers: tuple[Path, list[Path]], tmp_path: Path) -> None:
    model_dir, folders = eight_layers
    with serve(model_dir, (tmp_path / "prompts").as_uri(), tmp_path) as live:
        for index, folder in enumerate(folders):
            response = upload(live.url, f"size-{index}", folder)
            assert response.status_code == 201, (header_length(folder), response.text)
        pickle_byte = next(i for i, folder in enumerate(folders) if header_length(folder) % 256 == 128)
        body = {"task": f"size-{pickle_byte}", "inputs": "served", "parameters": {"max_new_tokens": 2}}
        assert httpx.post(f"{live.url}/v1/generate", json=body, timeout=60).status_code == 200
