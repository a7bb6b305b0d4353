"""What a caller hands the engine, and what comes back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from server.engine.sampling import SamplingParams
from server.prompts.forms import TaskPrompt


@dataclass(frozen=True)
class Request:
    input_ids: Sequence[int]
    prompt: TaskPrompt | None = None  # the task version resolved at admission; None: the base model alone
    task_index: int = 0  # sub-task of a multitask prompt-tuning artifact
    params: SamplingParams = field(default_factory=SamplingParams)
    on_done: Callable[[], None] | None = field(default=None, compare=False)  # called once it leaves the engine
    prompt_at: int | None = None  # put the virtual tokens after this many input tokens; None: before the input


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    virtual_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Event:
    """One new token of a request, or (with `finish_reason`) its end."""

    request_id: int
    token_id: int | None = None
    text: str = ""  # new text since the previous event
    finish_reason: str | None = None  # length | stop | eos | cancelled | error
    usage: Usage | None = None


@dataclass
class Generation:
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = ""
    usage: Usage | None = None

    def add(self, event: Event) -> None:
        if event.token_id is not None:
            self.token_ids.append(event.token_id)
        self.text += event.text
        if event.finish_reason is not None:
            self.finish_reason, self.usage = event.finish_reason, event.usage
