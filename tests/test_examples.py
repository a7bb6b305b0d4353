"""The sentiment example still runs end to end and writes an artifact promptswap accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prompt_store.artifact import load_artifact_dir
from prompt_store.records import parse_card
from server.engine.default_model import default_model_dir
from server.engine.model import model_spec


def test_sentiment_training_writes_a_servable_artifact(tmp_path: Path) -> None:
    out = tmp_path / "sentiment"
    command = [sys.executable, "-m", "examples.sentiment.train", "--out", str(out), "--steps", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    from transformers import AutoConfig

    spec = model_spec(AutoConfig.from_pretrained(default_model_dir()))
    artifact = load_artifact_dir(out, spec)
    assert artifact.peft_type == "PROMPT_TUNING" and artifact.num_virtual_tokens == 8
    card = parse_card((out / "card.json").read_bytes())
    assert (
        card.template == "Review: {input}\nSentiment:"
        and card.labels == json.loads((out / "card.json").read_text())["labels"]
    )
