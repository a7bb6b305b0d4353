"""What each route answers, for the OpenAPI document: the 200 bodies of API.md and, per route, the
error statuses it really gives, each with API.md's error body. Used only to describe the routes:
handlers return plain dicts, so describing an answer never changes it (more fields are welcome).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str | None = None  # also in the X-Request-ID header: quote it when reporting a problem


class ErrorBody(BaseModel):
    """Every error, whatever its status."""

    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    virtual_tokens: int
    completion_tokens: int


class TopToken(BaseModel):
    token_id: int
    token: str
    logprob: float


class TokenLogprob(TopToken):
    top_logprobs: list[TopToken]


class Output(BaseModel):
    text: str
    token_ids: list[int]
    finish_reason: Literal["length", "stop", "eos", "cancelled"]
    usage: Usage
    logprobs: list[TokenLogprob] | None = None  # with parameters.logprobs


class GenerateAnswer(BaseModel):
    task: str | None
    version: int | None
    outputs: list[Output]


class ClassifyResult(BaseModel):
    label: str
    scores: dict[str, float]


class ClassifyAnswer(BaseModel):
    task: str | None
    version: int | None
    results: list[ClassifyResult]


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"]


class CompletionAnswer(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: OpenAIUsage


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatTopToken(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(ChatTopToken):
    top_logprobs: list[ChatTopToken]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"]
    logprobs: ChatLogprobs | None = None


class ChatAnswer(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: OpenAIUsage


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]


class VersionAnswer(BaseModel):
    """A task version as the prompt routes show it."""

    task: str
    version: int
    peft_type: str
    num_virtual_tokens: int
    num_tasks: int
    sha256: str
    created_at: float
    nbytes: int
    card: dict[str, Any] | None
    family: str
    model_kind: str
    runtime_form: str


class UploadAnswer(VersionAnswer):
    unchanged: bool  # true: the files and card were the current version's; nothing was created (200, not 201)


class TaskAnswer(VersionAnswer):
    current_version: int


class TaskWithVersions(TaskAnswer):
    versions: list[VersionAnswer]


class PromptList(BaseModel):
    prompts: list[TaskAnswer]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    model: str


MEANINGS = {
    400: "The request is malformed: the message names the field and how to fix it.",
    401: "The route needs `Authorization: Bearer <key>` and none was sent.",
    403: "The key sent does not open this route.",
    404: "Unknown task, version or path.",
    409: "A change raced with another one; send it again.",
    413: "The body, an upload, an input (virtual tokens included) or the work asked for is too large.",
    422: "The artifact is malformed or does not fit the served model.",
    429: "The queue is full, or this client has too many requests in flight; see Retry-After.",
    503: "The model, the registry or this replica (shutting down) is not ready.",
    507: "The registry's disk is full; nothing was stored.",
}
# Every admitted request may meet these: a body too large, one client's cap, a replica draining.
EVERY_ROUTE = (413, 429, 503)
INFERENCE = (400, 401, 403, 404, *EVERY_ROUTE)
READS = (400, 401, 403, 404, *EVERY_ROUTE)
CHANGES = (400, 401, 403, 404, 409, *EVERY_ROUTE)
EVENT_STREAM = {"text/event-stream": {"schema": {"type": "string", "description": "data: {json} events, then [DONE]"}}}


def answers(
    model: type[BaseModel] | None, errors: tuple[int, ...], status: int = 200, streams: bool = False
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: its success answer, and each error status it gives with the error body."""
    success: dict[str, Any] = {"description": "Success"}
    if model is not None:
        success["model"] = model
    if streams:
        success["content"] = EVENT_STREAM
    described: dict[int | str, dict[str, Any]] = {status: success}
    for code in sorted(set(errors)):
        described[code] = {"model": ErrorBody, "description": MEANINGS[code]}
    return described
