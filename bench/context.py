"""What every suite shares: the profile, the device, the served model, PEFT artifacts and built prompts."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from bench.artifacts import ArtifactFiles, make_artifacts
from bench.config import Profile
from bench.launcher import Server, serve
from bench.models import random_llama
from bench.workload import Shape, shapes
from prompt_store.artifact import load_artifact_dir
from server.engine.engine import Engine
from server.engine.model import wrap_model
from server.prompts.forms import TaskPrompt


@dataclass
class Context:
    profile: Profile
    device: torch.device
    model_dir: Path  # what `promptswap serve --model` loads
    model: PreTrainedModel
    tokenizer: Any
    scratch: Path  # deleted after the run
    out: Path  # results and plots
    threads: int  # CPU threads for torch, here and in the server; 0: torch's default
    default_threads: int  # torch's own default here (suites that report both settings use it)
    engine: Engine = field(init=False)
    server_peaks: dict[str, int] = field(default_factory=dict)  # run name -> server's peak resident bytes
    exits: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _artifacts: dict[tuple[int, str], list[ArtifactFiles]] = field(default_factory=dict)
    _prompts: dict[tuple[int, str, int, int], TaskPrompt] = field(default_factory=dict)
    _server: Server | None = None
    _sweep_engine: Engine | None = None

    def __post_init__(self) -> None:
        self.engine = Engine(wrap_model(self.model, self.device), self.tokenizer)

    def thread_settings(self) -> dict[str, int]:
        """The CPU thread counts a suite reports: torch's default and one thread; on a GPU only the default."""
        if self.device.type != "cpu":
            return {"default threads": self.default_threads}
        return {"default threads": self.default_threads, "one thread": 1}

    def shapes(
        self, count: int, seed: int, output_tokens: tuple[int, int] | None = None, engine: Engine | None = None
    ) -> list[Shape]:
        """Requests with the profile's lengths, token ids valid for `engine`'s model (default: the served one)."""
        p = self.profile
        vocab = (engine or self.engine).base.spec.vocab_size
        return shapes(count, p.input_tokens, output_tokens or p.output_tokens, vocab, seed)

    def sweep_engine(self) -> Engine:
        """An engine on a random Llama of the profile's sweep size, built on first use."""
        if self._sweep_engine is None:
            model = random_llama(self.profile.sweep_shape).to(self.engine.base.dtype)  # type: ignore[arg-type]
            self._sweep_engine = Engine(wrap_model(model, self.device))
        return self._sweep_engine

    def artifacts(
        self, method: str, count: int, model: PreTrainedModel | None = None, num_virtual_tokens: int | None = None
    ) -> list[ArtifactFiles]:
        """`count` PEFT artifacts of `method` for `model` (default: the served one), made once and reused."""
        model = model or self.model
        n = num_virtual_tokens or self.profile.num_virtual_tokens
        key = (id(model), f"{method}-{n}")
        made = self._artifacts.get(key, [])
        if len(made) < count:
            folder = self.scratch / "artifacts" / f"{id(model)}-{method}-{n}"
            made = make_artifacts(model, method, n, count, folder)
            self._artifacts[key] = made
        return made[:count]

    def prompts(
        self, method: str, count: int, engine: Engine | None = None, num_virtual_tokens: int | None = None
    ) -> list[TaskPrompt]:
        """Runtime forms of `count` distinct tasks, built by `engine` (default: the served model's)."""
        engine = engine or self.engine
        n = num_virtual_tokens or self.profile.num_virtual_tokens
        built = []
        for index, files in enumerate(self.artifacts(method, count, engine.base.model, n)):
            key = (id(engine), method, n, index)
            if key not in self._prompts:
                self._prompts[key] = engine.build_prompt(load_artifact_dir(files.folder, engine.base.spec))
            built.append(self._prompts[key])
        return built

    def server(self) -> Server:
        """A live `promptswap serve` process on this model, started on first use, stopped after the run."""
        if self._server is None:
            self._server = self.exits.enter_context(
                serve(self.model_dir, self.device, self.scratch / "server", self.profile.http_concurrency, self.threads)
            )
        return self._server
