"""The engine's Python API: build task prompts, check requests, and run them.

`Engine.generate` runs a list of requests to completion through an `EngineCore`; the async,
continuously batched server path (`AsyncEngine`) drives the same core step by step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prompt_store.artifact import Artifact
from server.engine.core import EngineCore
from server.engine.detokenizer import Tokenizer
from server.engine.model import BaseModel
from server.engine.request import Generation, Request
from server.engine.runner import ModelRunner, PrefillRow
from server.engine.scheduler import SchedulerConfig
from server.engine.seq2seq import Seq2SeqRunner
from server.errors import ContextTooLong, InvalidRequest
from server.prompts.build import build_task_prompt
from server.prompts.forms import RowForm, TaskPrompt
from server.prompts.seq2seq_forms import seq2seq_task_prompt

__all__ = ["Engine", "Generation", "Request"]


class Engine:
    """Serves many prompt tasks from one frozen base model."""

    def __init__(self, base: BaseModel, tokenizer: Tokenizer | None = None) -> None:
        self.base = base
        self.tokenizer = tokenizer
        self.runner: ModelRunner | Seq2SeqRunner = (
            Seq2SeqRunner(base) if base.spec.kind == "seq2seq" else ModelRunner(base)
        )

    def build_prompt(self, artifact: Artifact) -> TaskPrompt:
        """Every runtime form of a validated artifact, computed once, on the model's device."""
        if isinstance(self.runner, Seq2SeqRunner):
            layers = self.runner.num_decoder_layers
            return seq2seq_task_prompt(artifact, self.base.spec, layers, self.base.device, self.base.dtype)
        return build_task_prompt(artifact, self.base.spec, self.runner.encode_prompt, self.base.device, self.base.dtype)

    def next_token_logits(self, requests: Sequence[Request]) -> torch.Tensor:
        """Logits [B, V] (float32) for the token after each request's input, in one forward pass."""
        if not requests:
            raise InvalidRequest("no requests given")
        rows = [PrefillRow(i, request.input_ids, self.check(request)) for i, request in enumerate(requests)]
        _, logits = self.runner.prefill(rows)
        return logits

    def generate(self, requests: Sequence[Request]) -> list[Generation]:
        """Run every request to completion in one batch (rows leave as they finish)."""
        size = max(len(requests), 1)
        core = EngineCore(self, SchedulerConfig(size, 1 << 40, 1 << 40, size))
        ids = [core.add(request) for request in requests]
        results = {request_id: Generation() for request_id in ids}
        while core.has_work:
            for event in core.step():
                results[event.request_id].add(event)
        return [results[request_id] for request_id in ids]

    def score_continuations(self, requests: Sequence[Request], continuations: Sequence[Sequence[int]]) -> torch.Tensor:
        """Sum of log-probabilities of each continuation after each request's input: [B, C].

        The inputs are prefilled once; every (row, continuation) pair then reuses that cache.
        """
        if not requests or not continuations or any(not c for c in continuations):
            raise InvalidRequest("each continuation needs at least one token")
        longest = max(len(c) for c in continuations)
        rows = [PrefillRow(i, r.input_ids, self.check(r, extra_tokens=longest)) for i, r in enumerate(requests)]
        batch, logits = self.runner.prefill(rows)
        first = torch.log_softmax(logits, dim=-1)  # [B, V]
        num_rows, num_choices = len(requests), len(continuations)
        heads = torch.tensor([c[0] for c in continuations], device=first.device)  # [C]
        scores = first[:, heads]  # [B, C]: the first token of each continuation
        if longest == 1:
            return scores
        expanded = batch.filter([row for row in range(num_rows) for _ in range(num_choices)])
        feed = torch.zeros(num_rows * num_choices, longest - 1, dtype=torch.long)  # [B*C, K-1]
        targets = torch.zeros(num_rows * num_choices, longest - 1, dtype=torch.long)
        valid = torch.zeros(num_rows * num_choices, longest - 1, dtype=torch.bool)
        for row in range(num_rows):
            for choice, tokens in enumerate(continuations):
                pair = row * num_choices + choice
                feed[pair, : len(tokens) - 1] = torch.tensor(tokens[:-1])
                targets[pair, : len(tokens) - 1] = torch.tensor(tokens[1:])
                valid[pair, : len(tokens) - 1] = True
        log_probs = torch.log_softmax(self.runner.extend(expanded, feed), dim=-1)  # [B*C, K-1, V]
        picked = log_probs.gather(-1, targets.to(log_probs.device)[..., None]).squeeze(-1)  # [B*C, K-1]
        rest = (picked * valid.to(picked.device)).sum(dim=-1).view(num_rows, num_choices)
        return scores + rest

    def check(self, request: Request, extra_tokens: int | None = None) -> RowForm | None:
        """Check a request against the model and its task; return the form its row is served with."""
        spec = self.base.spec
        params = request.params
        params.check()
        if params.stop and self.tokenizer is None:
            raise InvalidRequest("stop: this model has no tokenizer, so stop strings cannot be matched")
        if not request.input_ids:
            raise InvalidRequest("input_ids: expected at least one token, found none")
        bad = [t for t in request.input_ids if not 0 <= t < spec.vocab_size]
        if bad:
            raise InvalidRequest(f"input_ids: expected ids in [0, {spec.vocab_size}), found {bad[:5]}")
        prefix = None
        if request.prompt is not None:
            prompt = request.prompt
            if not 0 <= request.task_index < prompt.num_tasks:
                raise InvalidRequest(
                    f"task_index: expected 0..{prompt.num_tasks - 1} for this task, found {request.task_index}"
                )
            prefix = prompt.prefixes[request.task_index]
        new_tokens = params.max_new_tokens if extra_tokens is None else extra_tokens
        needed = (prefix.num_virtual_tokens if prefix else 0) + len(request.input_ids) + new_tokens
        if needed > spec.max_positions:
            raise ContextTooLong(
                f"virtual tokens + input tokens + new tokens = {needed}, "
                f"but the model takes at most {spec.max_positions} positions"
            )
        return prefix
