"""Request bodies of API.md, validated at the edge.

A field promptswap does not act on is refused with a 400 that names it, never accepted and ignored:
bodies forbid unknown fields, and the OpenAI fields promptswap does not implement are accepted
only with the value that means "off" (what a client sends when it fills every field with its default).
"""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from prompt_store.sampling_limits import (
    LIMITS,
    MAX_LOGIT_BIAS,
    MAX_LOGIT_BIASES,
    MAX_STOP_STRINGS,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    valid_temperature,
)
from server.engine.constraints import MAX_CHOICES, MAX_SPEC_CHARACTERS

Text = Annotated[str, Field(max_length=200_000)]
StopStrings = Annotated[list[Text], Field(max_length=MAX_STOP_STRINGS)]
Seed = Annotated[int, LIMITS["seed"].constraint()]
STRICT = ConfigDict(extra="forbid")
OPENAI_MAX_TEMPERATURE = 2.0  # OpenAI's own bound on its routes


class Strict(BaseModel):
    """A body that names each unknown field and the closest known one, e.g. `max_tokens` for
    `max_new_tokens`, rather than dropping it or saying only that it is not permitted."""

    model_config = STRICT

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = {field.alias or name for name, field in cls.model_fields.items()}
            unknown = [key for key in data if key not in known]
            if unknown:
                raise PydanticCustomError("unknown_field", "{message}", {"message": unknown_message(unknown, cls)})
        return data


def unknown_message(unknown: list[str], model: type[BaseModel]) -> str:
    known = [field.alias or name for name, field in model.model_fields.items()]
    named = []
    for field in unknown:
        close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
        named.append(f"{field!r} (did you mean {close[0]!r}?)" if close else repr(field))
    return f"unknown field {', '.join(named)}; the fields here are {', '.join(known)}"


def temperature_up_to(largest: float) -> AfterValidator:
    """0 (greedy) or MIN_TEMPERATURE..`largest`: a tinier temperature makes the softmax overflow."""

    def check(value: float | None) -> float | None:
        if value is not None and not valid_temperature(value, largest):
            raise PydanticCustomError(
                "temperature", "expected 0 (greedy) or {low}..{high}", {"low": MIN_TEMPERATURE, "high": largest}
            )
        return value

    return AfterValidator(check)


TokenId = Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]  # OpenAI sends a token id as a JSON object key
Bias = Annotated[float, Field(strict=True, ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS)]
LogitBias = Annotated[dict[TokenId, Bias], Field(max_length=MAX_LOGIT_BIASES)]
CONSTRAINTS = ("json_schema", "regex", "choice")


class Parameters(Strict):
    max_new_tokens: int | None = LIMITS["max_new_tokens"].field()
    temperature: Annotated[float | None, temperature_up_to(MAX_TEMPERATURE)] = None
    top_k: int | None = LIMITS["top_k"].field()
    top_p: float | None = LIMITS["top_p"].field()
    seed: Seed | None = None
    stop: StopStrings | None = None
    logprobs: bool | None = None  # each token's log-probability, before any adjustment
    top_logprobs: int | None = LIMITS["logprobs"].field()  # and this many most likely tokens at its step
    presence_penalty: float | None = LIMITS["presence_penalty"].field()
    frequency_penalty: float | None = LIMITS["frequency_penalty"].field()
    logit_bias: LogitBias | None = None  # token id (as a string, as OpenAI sends it) -> bias
    json_schema: dict[str, Any] | None = None  # at most one of these three constraints
    regex: Annotated[str, Field(max_length=MAX_SPEC_CHARACTERS)] | None = None
    choice: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_CHOICES)] | None = (
        None
    )

    @model_validator(mode="after")
    def _consistent(self) -> Parameters:
        given = [name for name in CONSTRAINTS if getattr(self, name) is not None]
        if len(given) > 1:
            raise PydanticCustomError(
                "invalid_field", "{names}: give at most one constraint", {"names": " and ".join(given)}
            )
        if self.top_logprobs and not self.logprobs:
            raise PydanticCustomError("invalid_field", "top_logprobs: needs logprobs: true")
        return self


class GenerateBody(Strict):
    task: str | None = None
    inputs: Text | list[Text]
    version: int | None = Field(default=None, ge=1)
    task_index: int = Field(default=0, ge=0)
    parameters: Parameters = Field(default_factory=Parameters)
    stream: bool = False


class ClassifyBody(Strict):
    task: str | None = None
    inputs: Text | list[Text]
    labels: list[Text] | dict[str, Text] | None = None
    version: int | None = Field(default=None, ge=1)
    task_index: int = Field(default=0, ge=0)


class RollbackBody(Strict):
    version: int = Field(ge=1)


def only_off(*off: Any) -> AfterValidator:
    """A validator for an OpenAI field promptswap does not implement: null and its "off" values pass."""

    def check(value: Any) -> Any:
        if value is not None and not any(type(value) is type(o) and value == o for o in off):
            accepted = " or ".join(["null", *(json.dumps(o) for o in off)])
            raise PydanticCustomError(
                "unsupported_field",
                "promptswap does not implement this field; leave it out (or send {accepted})",
                {"accepted": accepted},
            )
        return value

    return AfterValidator(check)


# OpenAI fields promptswap does not implement, each accepted only where it asks for nothing.
OffNull = Annotated[Any, only_off()]
OffZero = Annotated[Any, only_off(0, 0.0)]
OffFalse = Annotated[Any, only_off(False)]
OffOne = Annotated[Any, only_off(1)]
OffEmpty = Annotated[Any, only_off({}, [], "")]
OffNoTool = Annotated[Any, only_off("none")]
OffText = Annotated[Any, only_off({"type": "text"})]


class StreamOptions(Strict):
    include_usage: bool = False


class OpenAIBody(Strict):
    """What the completions and chat routes share, including the OpenAI fields refused unless off."""

    model: str
    temperature: Annotated[float | None, temperature_up_to(OPENAI_MAX_TEMPERATURE)] = 1.0
    top_p: float | None = LIMITS["top_p"].field(default=1.0)
    stop: Text | StopStrings | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: Seed | None = None
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = Field(default=None, max_length=256)  # a tag for the caller's own records; no effect
    frequency_penalty: float | None = LIMITS["frequency_penalty"].field()
    presence_penalty: float | None = LIMITS["presence_penalty"].field()
    logit_bias: LogitBias | None = None

    @model_validator(mode="after")
    def _options_need_a_stream(self) -> OpenAIBody:
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError("invalid_field", "stream_options: allowed only with stream: true")
        return self


class CompletionBody(OpenAIBody):
    """OpenAI's completions request."""

    prompt: Text | list[Text]
    max_tokens: int | None = LIMITS["max_new_tokens"].field(default=16)
    echo: OffFalse = None
    logprobs: int | None = LIMITS["logprobs"].field()  # each token's, and this many most likely ones
    best_of: OffOne = None
    suffix: OffEmpty = None


class TextPart(Strict):
    """One part of a message's content; promptswap reads text only."""

    type: Literal["text"]
    text: Text


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class JsonSchemaFormat(Strict):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    """`text` (no constraint), `json_object` (any JSON object) or `json_schema` (JSON valid under a schema)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_asked(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise PydanticCustomError("invalid_field", "response_format: json_schema goes with type json_schema")
        return self

    def output_schema(self) -> dict[str, Any] | None:
        """The JSON schema the output must follow, or None for plain text."""
        if self.type == "json_object":
            return {"type": "object"}
        return self.json_schema.schema_ if self.json_schema is not None else None


class ChatBody(OpenAIBody):
    """OpenAI's chat completions request."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = LIMITS["max_new_tokens"].field()
    max_completion_tokens: int | None = LIMITS["max_new_tokens"].field()
    logprobs: bool | None = None
    top_logprobs: int | None = LIMITS["logprobs"].field()
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatBody:
        if self.top_logprobs and not self.logprobs:
            raise PydanticCustomError("invalid_field", "top_logprobs: needs logprobs: true")
        return self

    tools: OffEmpty = None
    tool_choice: OffNoTool = None
    parallel_tool_calls: OffFalse = None
    functions: OffEmpty = None
    function_call: OffNoTool = None
