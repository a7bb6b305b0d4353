"""What the registry stores about each task version, and the optional task card."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prompt_store.errors import InvalidCard, InvalidTaskName
from prompt_store.sampling_limits import sampling_problems

PROMPT_PLACEHOLDER = "{prompt}"  # where a template puts the task's virtual tokens (default: before everything)
INPUT_PLACEHOLDER = "{input}"
MAX_TEMPLATE_INPUTS = 8  # each copy of {input} multiplies what a request makes the server tokenize and run
TASK_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
MAX_CARD_BYTES = 64 << 10


def check_task_name(name: str) -> str:
    """Task names: 1–64 characters of A-Za-z0-9._- that do not start with a dot."""
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
        raise InvalidTaskName(
            f"task name {name!r} is invalid: use 1-64 characters of A-Za-z0-9._- not starting with '.'"
        )
    return name


class GenerationDefaults(BaseModel):
    """A task's sampling defaults. Their bounds (`sampling_limits`) are checked at upload, in `parse_card`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None


class TaskCard(BaseModel):
    """`card.json`: how a task's inputs are wrapped and labelled, and its generation defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str | None = Field(default=None, max_length=4000)
    template: str | None = Field(default=None, max_length=8000)
    labels: list[str] | dict[str, str] | None = Field(default=None, min_length=1, max_length=1000)
    defaults: GenerationDefaults | None = None

    @field_validator("template")
    @classmethod
    def _has_input(cls, template: str | None) -> str | None:
        if template is not None and INPUT_PLACEHOLDER not in template:
            raise ValueError("template must contain {input}")
        if template is not None and template.count(PROMPT_PLACEHOLDER) > 1:
            raise ValueError("template may place {prompt} once")
        return template

    @property
    def places_prompt(self) -> bool:
        """The template puts the virtual tokens among the text instead of before it."""
        return self.template is not None and PROMPT_PLACEHOLDER in self.template


def parse_card(data: bytes) -> TaskCard:
    """An uploaded card. Checked here, not in `TaskCard` itself, are the limits that may change
    between releases (records stored under older ones must still load)."""
    if len(data) > MAX_CARD_BYTES:
        raise InvalidCard(f"card.json is {len(data)} bytes; the limit is {MAX_CARD_BYTES}")
    try:
        card = TaskCard.model_validate_json(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in error.errors())
        raise InvalidCard(f"card.json is invalid: {problems}") from None
    out_of_bounds = sampling_problems(card.defaults.model_dump()) if card.defaults is not None else []
    if out_of_bounds:
        raise InvalidCard(f"card.json is invalid: defaults.{'; defaults.'.join(out_of_bounds)}")
    copies = card.template.count(INPUT_PLACEHOLDER) if card.template is not None else 0
    if copies > MAX_TEMPLATE_INPUTS:
        raise InvalidCard(f"card.json: the template repeats {{input}} {copies} times; at most {MAX_TEMPLATE_INPUTS}")
    return card


class VersionRecord(BaseModel):
    """One immutable task version. `version` and `created_at` are set by the store when it commits."""

    model_config = ConfigDict(frozen=True)

    task: str
    version: int = 0
    peft_type: str
    num_virtual_tokens: int
    num_tasks: int
    config: dict[str, Any]
    sha256: str
    nbytes: int
    created_at: float = 0.0  # unix seconds
    spec_fingerprint: str
    card: TaskCard | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> VersionRecord:
        return cls.model_validate(json.loads(data))


class ChangeEvent(BaseModel):
    """Published for every new version, rollback and delete, so every replica learns of it."""

    model_config = ConfigDict(frozen=True)

    kind: str  # "version" | "rollback" | "delete", or "resync": events before this one may have been missed
    task: str
    version: int | None = None  # the task's current version after the change; None after delete
