"""Shared fixtures: one tiny random model per architecture, with real PEFT artifacts for it."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from prompt_store.artifact import load_artifact_dir
from server.engine.engine import Engine, Generation, Request
from server.engine.model import wrap_model
from server.engine.sampling import SamplingParams
from server.prompts.forms import TaskPrompt
from tests.factories import DEVICE, METHODS, load_peft, make_artifact, make_model, make_tokenizer
from tests.redis_server import redis_server

# Property tests drive whole engines, so 25 examples each. Under CI they are derandomised (the same
# examples every run, no example database), so a CI failure is reproducible; by hand,
# HYPOTHESIS_PROFILE=thorough runs 500 random examples each.
settings.register_profile("dev", max_examples=25)
settings.register_profile("ci", max_examples=25, derandomize=True, database=None, print_blob=True)
settings.register_profile("thorough", max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Task name -> (PEFT method, virtual tokens). Two prompt-tuning tasks of different lengths.
TASKS: dict[str, tuple[str, int]] = {
    "prompt_tuning": ("prompt_tuning", 6),
    "prompt_tuning_long": ("prompt_tuning", 11),
    "p_tuning_mlp": ("p_tuning_mlp", 5),
    "p_tuning_lstm": ("p_tuning_lstm", 4),
    "prefix": ("prefix", 7),
    "prefix_projection": ("prefix_projection", 3),
    "cartridge": ("cartridge", 5),
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
    tokenizer: PreTrainedTokenizerFast | None = None

    def engine(self, dtype: torch.dtype = torch.float32, positions: int | None = None) -> Served:
        """An engine over a copy of the base model; `positions`: let it take longer sequences than its
        config says (rotary models compute positions on the fly), for requests that must run for long."""
        model = copy.deepcopy(self.base).to(dtype)
        if positions is not None:
            model.config.max_position_embeddings = positions
        engine = Engine(wrap_model(model, DEVICE), self.tokenizer)
        prompts = {
            task: engine.build_prompt(load_artifact_dir(folder, engine.base.spec))
            for task, folder in self.folders.items()
        }
        return Served(engine, prompts)


@dataclass
class Served:
    """An engine with every zoo task built, and requests named by task."""

    engine: Engine
    prompts: dict[str, TaskPrompt]

    def request(self, input_ids: list[int], task: str | None = None, **options: Any) -> Request:
        task_index = options.pop("task_index", 0)
        prompt = self.prompts[task] if task else None
        return Request(input_ids, prompt=prompt, task_index=task_index, params=SamplingParams(**options), task=task)

    def generate(self, specs: list[TaskRequest]) -> list[Generation]:
        return self.engine.generate([self.request(s.input_ids, s.task, **s.options) for s in specs])

    def next_token_logits(self, specs: list[TaskRequest]) -> torch.Tensor:
        return self.engine.next_token_logits([self.request(s.input_ids, s.task, **s.options) for s in specs])


@dataclass
class TaskRequest:
    """A request named by task, as a user writes it; `Served` resolves the name."""

    input_ids: list[int]
    task: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def task_index(self) -> int:
        return int(self.options.get("task_index", 0))

    @property
    def max_new_tokens(self) -> int:
        return int(self.options.get("max_new_tokens", 64))


def build_zoo(arch: str, root: Path) -> Zoo:
    base = make_model(arch)
    folders = {
        task: make_artifact(base, method, n, root / task, seed=seed)
        for seed, (task, (method, n)) in enumerate(TASKS.items())
    }
    return Zoo(arch, base, folders, {task: load_peft(base, folder) for task, folder in folders.items()})


@pytest.fixture(scope="session", params=["llama", "gpt2", "gpt_neox", "qwen2"])
def zoo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return build_zoo(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="session")
def llama_zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """The Llama zoo alone, with a trained byte-level tokenizer, for tests that need text."""
    zoo = build_zoo("llama", tmp_path_factory.mktemp("llama-text"))
    zoo.tokenizer = make_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    return zoo


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
