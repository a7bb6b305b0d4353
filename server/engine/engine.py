"""The engine's Python API: register tasks, then generate for a list of requests in one batch.

Continuous batching, sampling and streaming build on the same `ModelRunner` and `Batch`;
this module runs one batch to completion with greedy decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prompt_store.artifact import Artifact
from server.engine.model import BaseModel
from server.engine.runner import ModelRunner, PrefillRow
from server.errors import ContextTooLong, InvalidRequest
from server.prompts.build import build_task_prompt
from server.prompts.forms import PrefixKV, TaskPrompt


@dataclass(frozen=True)
class Request:
    input_ids: Sequence[int]
    prompt: TaskPrompt | None = None  # the task version resolved at admission; None: the base model alone
    task_index: int = 0  # sub-task of a multitask prompt-tuning artifact
    max_new_tokens: int = 64
    stop_at_eos: bool = True


@dataclass
class Generation:
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = ""  # "length" or "eos"
    prompt_tokens: int = 0
    virtual_tokens: int = 0


class Engine:
    """Serves many prompt tasks from one frozen base model."""

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.runner = ModelRunner(base)

    def build_prompt(self, artifact: Artifact) -> TaskPrompt:
        """Every runtime form of a validated artifact, computed once, on the model's device."""
        return build_task_prompt(artifact, self.base.spec, self.runner.encode_prompt, self.base.device, self.base.dtype)

    def next_token_logits(self, requests: Sequence[Request]) -> torch.Tensor:
        """Logits [B, V] (float32) for the token after each request's input, in one forward pass."""
        _, logits = self.runner.prefill(self.prefill_rows(requests))
        return logits

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Greedy generation for every request, all rows in one batch; finished rows leave at once."""
        rows = self.prefill_rows(requests)
        results = [
            Generation(prompt_tokens=len(r.input_ids), virtual_tokens=self._virtual_tokens(row))
            for r, row in zip(requests, rows, strict=True)
        ]
        batch, logits = self.runner.prefill(rows)
        while True:
            tokens = logits.argmax(dim=-1)  # [B]
            keep = []
            for row, token in enumerate(tokens.tolist()):
                request_id = batch.request_ids[row]
                result, request = results[request_id], requests[request_id]
                result.token_ids.append(token)
                if request.stop_at_eos and token in self.base.eos_token_ids:
                    result.finish_reason = "eos"
                elif len(result.token_ids) >= request.max_new_tokens:
                    result.finish_reason = "length"
                else:
                    keep.append(row)
            if not keep:
                return results
            if len(keep) < len(batch):
                batch, tokens = batch.filter(keep), tokens[keep]
            batch, logits = self.runner.decode(batch, tokens)

    def prefill_rows(self, requests: Sequence[Request]) -> list[PrefillRow]:
        if not requests:
            raise InvalidRequest("no requests given")
        return [PrefillRow(i, request.input_ids, self.resolve(request)) for i, request in enumerate(requests)]

    @staticmethod
    def _virtual_tokens(row: PrefillRow) -> int:
        return row.prefix.num_virtual_tokens if row.prefix else 0

    def resolve(self, request: Request) -> PrefixKV | None:
        """Check a request against the model and its task; return the prefix it attends to."""
        spec = self.base.spec
        if not request.input_ids:
            raise InvalidRequest("input_ids: expected at least one token, found none")
        bad = [t for t in request.input_ids if not 0 <= t < spec.vocab_size]
        if bad:
            raise InvalidRequest(f"input_ids: expected ids in [0, {spec.vocab_size}), found {bad[:5]}")
        if request.max_new_tokens < 1:
            raise InvalidRequest(f"max_new_tokens: expected at least 1, found {request.max_new_tokens}")
        prefix = None
        if request.prompt is not None:
            prompt = request.prompt
            if not 0 <= request.task_index < prompt.num_tasks:
                raise InvalidRequest(
                    f"task_index: expected 0..{prompt.num_tasks - 1} for this task, found {request.task_index}"
                )
            prefix = prompt.prefixes[request.task_index]
        needed = (prefix.num_virtual_tokens if prefix else 0) + len(request.input_ids) + request.max_new_tokens
        if needed > spec.max_positions:
            raise ContextTooLong(
                f"virtual tokens + input tokens + max_new_tokens = {needed}, "
                f"but the model takes at most {spec.max_positions} positions"
            )
        return prefix
