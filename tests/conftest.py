"""Shared fixtures: one tiny random model per architecture, with real PEFT artifacts for it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel

from prompt_store.artifact import load_artifact_dir
from server.engine.engine import Engine
from server.engine.model import wrap_model
from tests.factories import METHODS, load_peft, make_artifact, make_model

# Task name -> (PEFT method, virtual tokens). Two prompt-tuning tasks of different lengths.
TASKS: dict[str, tuple[str, int]] = {
    "prompt_tuning": ("prompt_tuning", 6),
    "prompt_tuning_long": ("prompt_tuning", 11),
    "p_tuning_mlp": ("p_tuning_mlp", 5),
    "p_tuning_lstm": ("p_tuning_lstm", 4),
    "prefix": ("prefix", 7),
    "prefix_projection": ("prefix_projection", 3),
    "multitask": ("multitask", 5),
    "cpt": ("cpt", 8),
}
assert {method for method, _ in TASKS.values()} == set(METHODS)


@dataclass
class Zoo:
    """A base model, its artifacts on disk, and PEFT's own model for each."""

    arch: str
    base: PreTrainedModel
    folders: dict[str, Path]
    peft_models: dict[str, torch.nn.Module]

    def engine(self, dtype: torch.dtype = torch.float32) -> Engine:
        engine = Engine(wrap_model(copy.deepcopy(self.base).to(dtype), torch.device("cpu")))
        for task, folder in self.folders.items():
            engine.add_task(task, load_artifact_dir(folder, engine.base.spec))
        return engine


@pytest.fixture(scope="session", params=["llama", "gpt2", "gpt_neox", "qwen2"])
def zoo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    arch = request.param
    base = make_model(arch)
    root = tmp_path_factory.mktemp(arch)
    folders = {
        task: make_artifact(base, method, n, root / task, seed=seed)
        for seed, (task, (method, n)) in enumerate(TASKS.items())
    }
    return Zoo(arch, base, folders, {task: load_peft(base, folder) for task, folder in folders.items()})
