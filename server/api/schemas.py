"""Request bodies of API.md, validated at the edge. Unknown fields are ignored, as OpenAI clients send extras."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Text = Annotated[str, Field(max_length=200_000)]
StopStrings = Annotated[list[Text], Field(max_length=16)]
Seed = Annotated[int, Field(ge=0, lt=1 << 63)]


class Parameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    max_new_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    temperature: float | None = Field(default=None, ge=0.0, le=100.0)
    top_k: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: Seed | None = None
    stop: StopStrings | None = None


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task: str | None = None
    inputs: Text | list[Text]
    version: int | None = Field(default=None, ge=1)
    task_index: int = Field(default=0, ge=0)
    parameters: Parameters = Field(default_factory=Parameters)
    stream: bool = False


class ClassifyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task: str | None = None
    inputs: Text | list[Text]
    labels: list[Text] | dict[str, Text] | None = None
    version: int | None = Field(default=None, ge=1)
    task_index: int = Field(default=0, ge=0)


class RollbackBody(BaseModel):
    version: int = Field(ge=1)


class CompletionBody(BaseModel):
    """OpenAI's completions request; fields promptswap cannot honour are refused, not ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: Text | list[Text]
    max_tokens: int | None = Field(default=16, ge=1, le=1 << 20)
    temperature: float | None = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=1.0, gt=0.0, le=1.0)
    stop: Text | StopStrings | None = None
    stream: bool = False
    seed: Seed | None = None
    n: int = Field(default=1, ge=1, le=1)
    echo: Literal[False] = False
    logprobs: None = None
    user: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    temperature: float | None = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=1.0, gt=0.0, le=1.0)
    stop: Text | StopStrings | None = None
    stream: bool = False
    seed: Seed | None = None
    n: int = Field(default=1, ge=1, le=1)
