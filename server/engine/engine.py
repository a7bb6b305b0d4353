"""The engine's Python API: build task prompts, check requests, and run them.

`Engine.generate` runs a list of requests to completion through an `EngineCore`; the async,
continuously batched server path (`AsyncEngine`) drives a core made by `Engine.core` step by step.
What differs between causal, encoder-decoder and encoder models is in `kinds.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prompt_store.artifact import Artifact
from server.engine.allocator import SlotAllocator
from server.engine.checks import check_input_ids
from server.engine.constraints import Grammars
from server.engine.core import EngineCore, Runner, reserved_tokens
from server.engine.detokenizer import Tokenizer
from server.engine.kinds import KINDS, ModelKind
from server.engine.metrics import EngineMetrics
from server.engine.model import BaseModel
from server.engine.request import Generation, Request, RowPrompt, Work
from server.engine.scheduler import SchedulerConfig
from server.errors import ContextTooLong, InvalidRequest
from server.prompts.forms import TaskPrompt

__all__ = ["Engine", "Generation", "Request"]


class Engine:
    """Serves many prompt tasks from one frozen base model."""

    def __init__(self, base: BaseModel, tokenizer: Tokenizer | None = None) -> None:
        self.base = base
        self.tokenizer = tokenizer
        self.kind: ModelKind = KINDS[base.spec.kind](base)
        self.grammars = None if tokenizer is None else Grammars(tokenizer, base.spec.vocab_size, base.eos_token_ids)

    @property
    def runner(self) -> Runner:
        """The runner of a model that generates."""
        if self.kind.runner is None:
            raise InvalidRequest(
                f"this model ({self.base.spec.model_type}) is an encoder classifier: it does not generate; "
                "use /v1/classify"
            )
        return self.kind.runner

    def build_prompt(self, artifact: Artifact) -> TaskPrompt:
        """Every runtime form of a validated artifact, computed once, on the model's device."""
        return self.kind.build_prompt(artifact)

    def core(self, config: SchedulerConfig, metrics: EngineMetrics | None = None) -> EngineCore:
        """A continuously batched core over this model, with its own KV cache."""
        return EngineCore(
            self.runner, self.check, config, self.tokenizer, self.base.eos_token_ids, metrics, self.grammars
        )

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Run every request to completion in one batch (rows leave as they finish)."""
        core = self.core(self._fitting(requests))
        ids = [core.add(request) for request in requests]
        results = {request_id: Generation() for request_id in ids}
        while core.has_work:
            for event in core.step():
                results[event.request_id].add(event)
        return [results[request_id] for request_id in ids]

    def score_continuations(self, requests: Sequence[Request], continuations: Sequence[Sequence[int]]) -> torch.Tensor:
        """Sum of log-probabilities of each continuation after each request's input: [B, C] float32."""
        if not requests or not continuations or any(not c for c in continuations):
            raise InvalidRequest("each continuation needs at least one token")
        branches = tuple(tuple(c) for c in continuations)
        scoring = [Request(r.input_ids, r.prompt, r.task_index, r.params, prompt_at=r.prompt_at,
                           continuations=branches) for r in requests]  # fmt: skip
        return torch.tensor([list(generation.scores) for generation in self.generate(scoring)])

    @staticmethod
    def label_probabilities(scores: Sequence[Sequence[float]] | Sequence[torch.Tensor]) -> list[list[float]]:
        """Each row's scores over its labels made probabilities (a softmax in float32): the summed
        log-probabilities of each label's continuation, or an encoder head's logits [C]."""
        return [torch.softmax(torch.as_tensor(row, dtype=torch.float32), dim=-1).tolist() for row in scores]

    def next_token_logits(self, requests: Sequence[Request]) -> torch.Tensor:
        """Logits [B, V] (float32) for the token after each request's input, in one forward pass."""
        if not requests:
            raise InvalidRequest("no requests given")
        prompts = [self.check(request) for request in requests]
        owned = [prompt.own_token_ids(request.input_ids) for prompt, request in zip(prompts, requests, strict=True)]
        slots = SlotAllocator(sum(len(ids) for ids in owned), align=1)
        works = []
        for i, (prompt, ids) in enumerate(zip(prompts, owned, strict=True)):
            segment = slots.allocate(len(ids))
            assert segment is not None
            works.append(Work(i, ids, 0, prompt, segment, (len(ids) - 1,)))
        runner = self.runner
        return runner.forward(runner.new_cache(slots.capacity), works)

    def classify(self, requests: Sequence[Request]) -> list[torch.Tensor]:
        """Encoder classifiers: each row's logits from its own task's head, [C_i] (float32), one pass."""
        classifier = self.kind.classifier
        if classifier is None:
            raise InvalidRequest("this model is a language model; classify by verbalizer scores instead")
        if not requests:
            raise InvalidRequest("no requests given")
        return classifier.classify(requests)

    def check(self, request: Request) -> RowPrompt:
        """Check a request against the model and its task; return what its task adds to the row."""
        spec = self.base.spec
        row = self.kind.row_prompt(request)
        params = request.params
        params.check(spec.vocab_size)
        if params.stop and self.tokenizer is None:
            raise InvalidRequest("stop: this model has no tokenizer, so stop strings cannot be matched")
        if params.constraint is not None:
            if self.grammars is None:
                raise InvalidRequest(f"{params.constraint.kind}: this model has no tokenizer to constrain its text")
            self.grammars.check(params.constraint)
        check_input_ids(request.input_ids, spec.vocab_size)
        if request.continuations:
            check_input_ids([t for c in request.continuations for t in c], spec.vocab_size)
        new_tokens = max(map(len, request.continuations)) if request.continuations else params.max_new_tokens
        needed = row.num_virtual_tokens + len(request.input_ids) + new_tokens
        if needed > spec.max_positions:
            raise ContextTooLong(
                f"virtual tokens + input tokens + new tokens = {needed}, "
                f"but the model takes at most {spec.max_positions} positions"
            )
        return row

    def _fitting(self, requests: Sequence[Request]) -> SchedulerConfig:
        """A scheduler config under which all `requests` run at once."""
        slots = SlotAllocator(1)
        total = 0
        for request in requests:
            own = self.check(request).own_token_ids(request.input_ids)
            total += slots.size_of(reserved_tokens(len(own), request))
        size = max(len(requests), 1)
        bytes_per_token = self.runner.kv_bytes_per_token
        return SchedulerConfig(size, 1 << 40, size, kv_cache_bytes=max(total, 1) * bytes_per_token)
