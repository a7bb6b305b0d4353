"""What a caller hands the engine, what one row of a step is, and what comes back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from server.engine.logits import TokenLogprob
from server.engine.sampling import SamplingParams
from server.prompts.forms import AdaptionPrompt, PrefixKV, PromptEmbeddings, TaskPrompt

PAD_TOKEN_ID = 0  # any valid id: a pad position is masked out or overwritten, and never sampled


@dataclass(frozen=True)
class Request:
    input_ids: Sequence[int]
    prompt: TaskPrompt | None = None  # the task version resolved at admission; None: the base model alone
    task_index: int = 0  # sub-task of a multitask prompt-tuning artifact
    params: SamplingParams = field(default_factory=SamplingParams)
    on_done: Callable[[], None] | None = field(default=None, compare=False)  # called once it leaves the engine
    prompt_at: int | None = None  # put the virtual tokens after this many input tokens; None: before the input
    client: str = ""  # who sent it: admission shares the batch fairly between clients
    # Score these continuations after the input instead of generating (classification by verbalizers).
    continuations: tuple[tuple[int, ...], ...] = ()
    task: str | None = None  # the task's name (None: the base model), for metrics


@dataclass(frozen=True)
class RowPrompt:
    """What one row's task adds to it: at most one of a prefix, inline embeddings, an adapter or
    (encoder-decoder) embeddings before the encoder input."""

    prefix: PrefixKV | None = None  # virtual tokens before the input, as keys/values computed once, shared
    inline: torch.Tensor | None = None  # [N, D] virtual-token embeddings placed among the input tokens
    inline_at: int = 0  # how many input tokens come before `inline`
    adapter: AdaptionPrompt | None = None  # LLaMA-Adapter: no positions, an extra attention term
    encoder: PromptEmbeddings | None = None  # encoder-decoder: before the encoder input (and the decoder's start)

    @property
    def num_virtual_tokens(self) -> int:
        """Positions the prompt takes in the row's sequence (its encoder's, on an encoder-decoder)."""
        form = self.prefix or self.encoder
        if form is not None:
            return form.num_virtual_tokens
        return 0 if self.inline is None else self.inline.shape[0]

    @property
    def num_prefix_tokens(self) -> int:
        """Positions before the row's own tokens (a shared prefix's), which the row does not store."""
        return 0 if self.prefix is None else self.prefix.num_virtual_tokens

    def own_token_ids(self, input_ids: Sequence[int]) -> list[int]:
        """The tokens the row stores itself: its input, with a pad id in each inline virtual-token slot."""
        if self.inline is None:
            return list(input_ids)
        at = self.inline_at
        return [*input_ids[:at], *[PAD_TOKEN_ID] * self.inline.shape[0], *input_ids[at:]]


NO_PROMPT = RowPrompt()


@dataclass(frozen=True)
class Work:
    """One row's part of a model step: feed `token_ids` at the row's own positions `start ..`.

    A prefill chunk, a whole prompt, or the one token sampled last. With `branches` the tokens are
    several continuations of the row's first `start` tokens instead (label scoring): each branch
    restarts at position `start` and sees the row's tokens and its own earlier tokens only.
    """

    seq_id: int
    token_ids: Sequence[int]
    start: int  # own tokens already in the row's cache
    prompt: RowPrompt = NO_PROMPT
    segment: int = 0  # where the row's own tokens live in the KV pool
    logits_at: tuple[int, ...] = ()  # indices into `token_ids` whose next-token logits the step returns
    branches: tuple[int, ...] = ()  # lengths of the continuations `token_ids` holds, back to back

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def stores_tokens(self) -> bool:
        """Whether the fed tokens' keys/values stay in the row's cache (continuations are scored and forgotten)."""
        return not self.branches


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    virtual_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Timing:
    """When a request reached each stage in the engine (wall clock, ns since the epoch; 0: never), so that
    the API can draw its trace spans (queue wait, prefill, decode) without the engine knowing of traces."""

    arrived_ns: int
    admitted_ns: int = 0
    first_token_ns: int = 0
    finished_ns: int = 0


@dataclass(frozen=True)
class Event:
    """One new token of a request, or (with `finish_reason`) its end."""

    request_id: int
    token_id: int | None = None
    text: str = ""  # new text since the previous event
    finish_reason: str | None = None  # length | stop | eos | cancelled | error | scored
    usage: Usage | None = None
    scores: tuple[float, ...] = ()  # a scoring request's log-probability of each continuation
    logprob: TokenLogprob | None = None  # the token's, when the request reports log-probabilities
    timing: Timing | None = None  # on the last event


@dataclass
class Generation:
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = ""
    usage: Usage | None = None
    scores: tuple[float, ...] = ()
    logprobs: list[TokenLogprob] = field(default_factory=list)
    timing: Timing | None = None

    def add(self, event: Event) -> None:
        if event.token_id is not None:
            self.token_ids.append(event.token_id)
        if event.logprob is not None:
            self.logprobs.append(event.logprob)
        self.text += event.text
        if event.finish_reason is not None:
            self.finish_reason, self.usage, self.scores = event.finish_reason, event.usage, event.scores
            self.timing = event.timing
