"""What differs between model kinds, one small class each, chosen by name from `KINDS`.

A kind builds a task's runtime forms, says what a request's task adds to its row, and provides
the runner that generates (none for encoder classifiers, which only classify with heads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prompt_store.artifact import Artifact
from server.engine.causal import CausalRunner
from server.engine.checks import check_task_index
from server.engine.core import Runner
from server.engine.encoder import EncoderRunner
from server.engine.model import BaseModel
from server.engine.request import NO_PROMPT, Request, RowPrompt
from server.engine.seq2seq import Seq2SeqRunner
from server.errors import InvalidRequest
from server.prompts.build import build_task_prompt
from server.prompts.encoder_forms import build_encoder_prompt
from server.prompts.forms import PrefixKV, TaskPrompt
from server.prompts.seq2seq_forms import seq2seq_task_prompt


class ModelKind(Protocol):
    @property
    def runner(self) -> Runner | None:
        """The runner that generates; None for a kind that does not."""

    @property
    def classifier(self) -> EncoderRunner | None:
        """Encoder classifiers: each task's own head scores the input."""

    def build_prompt(self, artifact: Artifact) -> TaskPrompt: ...

    def row_prompt(self, request: Request) -> RowPrompt: ...


def task_form(request: Request) -> tuple[TaskPrompt, int] | None:
    """The request's task version and sub-task, checked; None for the base model alone."""
    if request.prompt is None:
        if request.prompt_at is not None:
            raise InvalidRequest("prompt_at: virtual tokens need a task")
        return None
    check_task_index(request.prompt, request.task_index)
    return request.prompt, request.task_index


class CausalKind:
    classifier = None

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.runner: CausalRunner = CausalRunner(base)

    def build_prompt(self, artifact: Artifact) -> TaskPrompt:
        base, runner = self.base, self.runner
        return build_task_prompt(
            artifact, base.spec, runner.encode_prompt, base.device, base.dtype, project=runner.project_adapter
        )

    def row_prompt(self, request: Request) -> RowPrompt:
        """A shared prefix, inline embeddings where the card's template places them, or an adapter."""
        found = task_form(request)
        if found is None:
            return NO_PROMPT
        prompt, index = found
        if prompt.adapter is not None:
            return RowPrompt(adapter=prompt.adapter)
        if request.prompt_at is None:
            form = prompt.prefixes[index]
            assert isinstance(form, PrefixKV), "causal tasks are built as prefixes"
            return RowPrompt(prefix=form)
        if prompt.embeddings is None:
            raise InvalidRequest(
                f"{prompt.peft_type} stores keys and values, not embeddings: its virtual tokens can only "
                "come before the input, so the template cannot place {prompt}"
            )
        if not 0 <= request.prompt_at <= len(request.input_ids):
            raise InvalidRequest(f"prompt_at: expected 0..{len(request.input_ids)}, found {request.prompt_at}")
        return RowPrompt(inline=prompt.embeddings[index].embeddings, inline_at=request.prompt_at)


class Seq2SeqKind:
    classifier = None

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.runner: Seq2SeqRunner = Seq2SeqRunner(base)

    def build_prompt(self, artifact: Artifact) -> TaskPrompt:
        base = self.base
        return seq2seq_task_prompt(artifact, base.spec, self.runner.num_decoder_layers, base.device, base.dtype)

    def row_prompt(self, request: Request) -> RowPrompt:
        """A decoder prefix, or embeddings before the encoder input."""
        if request.prompt_at is not None and request.prompt is not None:
            raise InvalidRequest("prompt_at: virtual tokens are placed inside the input on causal models only")
        found = task_form(request)
        if found is None:
            return NO_PROMPT
        prompt, index = found
        form = prompt.prefixes[index]
        return RowPrompt(prefix=form) if isinstance(form, PrefixKV) else RowPrompt(encoder=form)


class EncoderKind:
    runner = None

    def __init__(self, base: BaseModel) -> None:
        self.base = base
        self.classifier: EncoderRunner = EncoderRunner(base)

    def build_prompt(self, artifact: Artifact) -> TaskPrompt:
        base = self.base
        return build_encoder_prompt(artifact, base.spec, base.device, base.dtype)

    def row_prompt(self, request: Request) -> RowPrompt:
        spec = self.base.spec
        raise InvalidRequest(
            f"this model ({spec.model_type}) is an encoder classifier: it does not generate; use /v1/classify"
        )


KINDS: dict[str, Callable[[BaseModel], ModelKind]] = {
    "causal": CausalKind,
    "seq2seq": Seq2SeqKind,
    "encoder": EncoderKind,
}
