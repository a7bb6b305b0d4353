"""The engine's Python API: build task prompts, check requests, and run them.

`Engine.generate` runs a list of requests to completion through an `EngineCore`; the async,
continuously batched server path (`AsyncEngine`) drives the same core step by step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prompt_store.artifact import Artifact
from server.engine.checks import check_input_ids, check_task_index
from server.engine.core import EngineCore
from server.engine.detokenizer import Tokenizer
from server.engine.encoder import EncoderRunner
from server.engine.model import BaseModel
from server.engine.request import Generation, Request
from server.engine.runner import NO_PROMPT, ModelRunner, PrefillRow, RowPrompt
from server.engine.scheduler import SchedulerConfig
from server.engine.seq2seq import Seq2SeqRunner
from server.errors import ContextTooLong, InvalidRequest
from server.prompts.build import build_task_prompt
from server.prompts.encoder_forms import build_encoder_prompt
from server.prompts.forms import PrefixKV, TaskPrompt
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
        # Encoder classifiers have no next-token logits: they only classify, each row with its task's head.
        self.encoder = EncoderRunner(base) if base.spec.kind == "encoder" else None

    def build_prompt(self, artifact: Artifact) -> TaskPrompt:
        """Every runtime form of a validated artifact, computed once, on the model's device."""
        base, runner = self.base, self.runner
        if self.encoder is not None:
            return build_encoder_prompt(artifact, base.spec, base.device, base.dtype)
        if isinstance(runner, Seq2SeqRunner):
            return seq2seq_task_prompt(artifact, base.spec, runner.num_decoder_layers, base.device, base.dtype)
        return build_task_prompt(
            artifact, base.spec, runner.encode_prompt, base.device, base.dtype, project=runner.project_adapter
        )

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

    def classify(self, requests: Sequence[Request]) -> list[torch.Tensor]:
        """Encoder classifiers: each row's logits from its own task's head, [C_i] (float32), one pass."""
        if self.encoder is None:
            raise InvalidRequest("this model is a language model; classify by verbalizer scores instead")
        if not requests:
            raise InvalidRequest("no requests given")
        return self.encoder.classify(requests)

    def check(self, request: Request, extra_tokens: int | None = None) -> RowPrompt:
        """Check a request against the model and its task; return what its task adds to the row."""
        spec = self.base.spec
        if self.encoder is not None:
            raise InvalidRequest(
                f"this model ({spec.model_type}) is an encoder classifier: it does not generate; use /v1/classify"
            )
        params = request.params
        params.check()
        if params.stop and self.tokenizer is None:
            raise InvalidRequest("stop: this model has no tokenizer, so stop strings cannot be matched")
        check_input_ids(request.input_ids, spec.vocab_size)
        row = self.row_prompt(request)
        new_tokens = params.max_new_tokens if extra_tokens is None else extra_tokens
        needed = row.num_virtual_tokens + len(request.input_ids) + new_tokens
        if needed > spec.max_positions:
            raise ContextTooLong(
                f"virtual tokens + input tokens + new tokens = {needed}, "
                f"but the model takes at most {spec.max_positions} positions"
            )
        return row

    def row_prompt(self, request: Request) -> RowPrompt:
        """The form of the request's task that its row uses: a prefix, inline embeddings or an adapter."""
        prompt, index = request.prompt, request.task_index
        if prompt is None:
            if request.prompt_at is not None:
                raise InvalidRequest("prompt_at: virtual tokens need a task")
            return NO_PROMPT
        check_task_index(prompt, index)
        if prompt.adapter is not None:
            return RowPrompt(adapter=prompt.adapter)
        form = prompt.prefixes[index]
        if request.prompt_at is None:
            return RowPrompt(prefix=form) if isinstance(form, PrefixKV) else RowPrompt(encoder=form)
        if self.base.spec.kind != "causal":
            raise InvalidRequest("prompt_at: virtual tokens are placed inside the input on causal models only")
        if prompt.embeddings is None:
            raise InvalidRequest(
                f"{prompt.peft_type} stores keys and values, not embeddings: its virtual tokens can only "
                "come before the input, so the template cannot place {prompt}"
            )
        if not 0 <= request.prompt_at <= len(request.input_ids):
            raise InvalidRequest(f"prompt_at: expected 0..{len(request.input_ids)}, found {request.prompt_at}")
        return RowPrompt(inline=prompt.embeddings[index].embeddings, inline_at=request.prompt_at)
