"""The `promptswap` console command, run as a user runs it: a real process on real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.factories import make_artifact, make_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    make_model("llama").save_pretrained(folder)
    return folder


def promptswap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promptswap")
    assert executable, "the promptswap console script is installed with the package"
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=300, env=env)


def test_check_reports_runtime_forms_and_rejects_a_bad_artifact(model_dir: Path, tmp_path: Path) -> None:
    base = make_model("llama")
    good = make_artifact(base, "multitask", 20, tmp_path / "good", seed=0)
    bad = make_artifact(make_model("gpt_neox"), "prefix", 4, tmp_path / "bad", seed=0)
    result = promptswap("check", str(good), str(bad), "--model", str(model_dir), "--device", "cpu")
    assert result.returncode == 1, result.stderr
    good_report, bad_report = (json.loads(line) for line in result.stdout.splitlines())
    assert good_report["peft_type"] == "MULTITASK_PROMPT_TUNING"
    assert good_report["sub_tasks"] == 3
    # 3 sub-tasks × (KV: 3 layers × 2 × 2 kv heads × 20 tokens × 16 dims + embeddings: 20 × 64), fp32
    assert good_report["runtime_bytes"] == 3 * (3 * 2 * 2 * 20 * 16 + 20 * 64) * 4
    assert bad_report["error"] == "artifact_mismatch"
    assert "num_attention_heads: expected 2, found 4" in bad_report["message"]


def test_model_flag_reads_the_environment(model_dir: Path, tmp_path: Path) -> None:
    good = make_artifact(make_model("llama"), "prompt_tuning", 5, tmp_path / "pt", seed=0)
    env = {**os.environ, "PROMPTSWAP_MODEL": str(model_dir), "PROMPTSWAP_DEVICE": "cpu"}
    result = promptswap("check", str(good), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_virtual_tokens"] == 5
